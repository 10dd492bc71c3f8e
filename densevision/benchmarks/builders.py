"""The models the benchmarks compare, built by source and registered name, and what they cost (parameters,
forward FLOPs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from densevision.models.layers import set_fast_path


def build_model(
    source: str, name: str, memory_efficient: bool = False, depth: int = 100, growth: int = 12
) -> nn.Module:
    """A model by source (``densevision`` / ``torchvision`` / ``reference``: a densevision model run on its
    module path) and registered name; ``densenet_bc`` is a CIFAR DenseNet-BC of any ``depth`` and
    ``growth``.

    Raises:
        ValueError: ``source`` is none of the three.
    """
    if source == "reference":
        return ReferenceModel(build_model("densevision", name, memory_efficient, depth, growth))
    if source == "densevision" and name == "densenet_bc":
        from densevision.models.backbones.densenet import cifar_densenet

        return cifar_densenet(depth, growth, bottleneck=True, memory_efficient=memory_efficient)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, memory_efficient=memory_efficient)
    if source == "densevision":
        from densevision.models import create_model

        # only asked for when wanted: some presets (FC-HarDNet) have no memory-efficient mode
        return create_model(name, **({"memory_efficient": True} if memory_efficient else {}))
    raise ValueError(f"model source must be 'densevision', 'torchvision' or 'reference', got {source!r}")


class ReferenceModel(nn.Module):
    """Runs ``model`` on its module path (``set_fast_path(model, False)`` for each call, restored after, so
    that the wrapped model can be shared with a fast candidate): the torchvision-style baseline for
    models torchvision lacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        """(N, C, H, W) -> the wrapped model's output, computed on its module path."""
        set_fast_path(self.model, False)
        try:
            return self.model(x)
        finally:
            set_fast_path(self.model, True)


def count_gflops(model: nn.Module, batch: Tensor) -> float:
    """Forward GFLOPs for a (N, C, H, W) ``batch`` in eval mode (2 FLOPs per multiply-add, as the zoo
    counts them)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(batch)
    return counter.get_total_flops() / 1e9


def params_m(model: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6
