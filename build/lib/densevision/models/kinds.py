"""What kind of model a module is, for the code that runs models without knowing how they were built
(inference, export, the model zoo)."""

from __future__ import annotations

from typing import Literal

from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

# torchvision's detectors: a list of (3, H, W) images in, a list of detection dicts out
DETECTOR_TYPES = (GeneralizedRCNN, RetinaNet, FCOS)

ModelKind = Literal["detection", "backbone", "dense"]


def model_kind(model: nn.Module) -> ModelKind:
    """``"detection"``, ``"backbone"`` (returns a feature dict) or ``"dense"`` (returns one tensor)."""
    if isinstance(model, DETECTOR_TYPES):
        return "detection"
    return "backbone" if getattr(model, "features_only", False) else "dense"
