"""Shared test helper: BatchNorm layers with non-trivial running statistics."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn_statistics(model: nn.Module, mean_range: float = 0.5) -> nn.Module:
    """Running means uniform in +-``mean_range`` and variances in [0.5, 2) for every BatchNorm2d, in
    place, so eval mode differs from training mode and a wrong BN fold shows. Returns ``model``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-mean_range, mean_range)
                m.running_var.uniform_(0.5, 2.0)
    return model
