"""The one base of every segmenter: encoder -> decoder -> head, logits at the input's size.

As segmentation_models_pytorch's ``SegmentationModel``: a subclass builds its modules and says how its
encoder and decoder run (``encode``, ``decode``); the base owns ``forward``, the input check and the final
resize, so every segmenter checks and returns the same way. The helpers it uses are public, for the
segmenters and for the tasks and inference code that score logits (``resize_logits``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def check_input(model: nn.Module, x: Tensor, in_chans: int | None, min_size: int) -> None:
    """Raise a ``ValueError`` naming ``model`` unless ``x`` is (N, ``in_chans``, H, W), H, W >= ``min_size``.

    Args:
        model: the module checking its input (its class names it in the message).
        x: the input images.
        in_chans: the channel count wanted; None = any.
        min_size: the network's total stride: the least H and W it can downsample.
    """
    name = type(model).__name__
    if x.dim() != 4 or (in_chans is not None and x.shape[1] != in_chans):
        chans = in_chans if in_chans is not None else "C"
        raise ValueError(
            f"{name} expects images of shape (N, {chans}, H, W), got {tuple(x.shape)}; "
            "set in_chans to your images' channel count"
        )
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{name}: input {tuple(x.shape[-2:])} is smaller than it can downsample: it needs H, W >= "
            f"{min_size} (its total stride), got {tuple(x.shape)}; pad or resize the images to at least "
            f"{min_size} pixels a side"
        )


def kaiming_init(*modules: nn.Module, mode: str = "fan_in") -> None:
    """He-normal weights (ReLU gain) and zero biases for every (transposed) conv in ``modules``.

    Segmenters call it on what they build themselves, never on a backbone that may hold pretrained
    weights. ``mode``: ``"fan_in"`` (the default of ``nn.init.kaiming_normal_``) or ``"fan_out"``
    (torchvision's ImageNet models, and FC-HarDNet's reference implementation).
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def resize_logits(logits: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """(N, C, h, w) logits -> (N, C, *size), bilinear (unchanged when already that size): networks return,
    and tasks score, logits at the input's or the labels' resolution; the argmax comes after.
    ``align_corners``: as ``F.interpolate``; True only for weights trained that way (FC-HarDNet)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def backbone_input(backbone: nn.Module) -> tuple[int | None, int]:
    """(in_chans, min_input_size) of a feature backbone: what it declares, else any channel count and
    its deepest feature's stride."""
    deepest = tuple(backbone.feature_info)[-1]
    return getattr(backbone, "in_chans", None), getattr(backbone, "min_input_size", deepest.stride)


class SegmentationModel(nn.Module):
    """Base of every densevision segmenter: ``encode`` -> ``decode`` -> ``classifier``, logits resized to
    the input.

    A subclass calls ``super().__init__(num_classes=...)``, builds its encoder, decoder and a 1x1
    ``classifier`` (the head), sets ``in_chans`` (None = any) and ``min_input_size``, and implements
    ``encode`` and ``decode``. Its submodules keep their own names (``encoder`` or ``backbone``, ...), so
    checkpoints of every segmenter load unchanged.

    Args:
        num_classes: output classes C.

    Raises:
        ValueError: ``num_classes`` < 1.

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes, H, W), for H, W >= ``min_input_size``.
    """

    #: ``align_corners`` of the final bilinear resize (True only where trained weights assume it).
    align_corners: bool = False
    classifier: nn.Module

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.in_chans: int | None = None
        self.min_input_size = 1

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) images -> the encoder's feature dict, high to low resolution."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode")

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """The encoder's features -> (N, C_dec, h, w) maps for the classifier, at the decoder's stride;
        ``image_size`` is the input's (H, W)."""
        raise NotImplementedError(f"{type(self).__name__} must implement decode")

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_chans, H, W) images -> (N, num_classes, H, W) logits."""
        check_input(self, x, self.in_chans, self.min_input_size)
        size = x.shape[-2:]
        logits = self.classifier(self.decode(self.encode(x), size))
        return resize_logits(logits, size, align_corners=self.align_corners)
