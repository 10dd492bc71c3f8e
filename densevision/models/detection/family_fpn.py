"""torchvision's detectors on the DenseNet descendants: RDNet, VoVNet-V2 and HarDNet + FPN.

Backbones: Kim et al., "DenseNets Reloaded", ECCV 2024; Lee & Park, "CenterMask", CVPR 2020 (VoVNetV2);
Chao et al., "HarDNet", ICCV 2019. Detectors and their defaults as in ``densenet_fpn``: the backbone is
read through its ``feature_info`` alone (R-CNNs take c2..c5, RetinaNet and FCOS c3..c5), so any
registered backbone with those features works in ``family_fpn_detector``.

Registered presets, ``{kind}_{backbone}_fpn`` for kind in fasterrcnn / maskrcnn / retinanet / fcos and
backbone in ``PRESET_BACKBONES`` (e.g. ``fcos_rdnet_tiny_fpn``, ``fasterrcnn_vovnet39_fpn``), all with the
keyword arguments of ``family_fpn_detector`` except ``kind`` and ``backbone``. ``weights_backbone`` is a
local file: timm format for RDNet and VoVNet (``rdnet_tiny``, ``ese_vovnet39b``), densevision's own for
HarDNet.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet

from densevision.models.detection.densenet_fpn import (
    _KIND_NAMES,
    _KINDS,
    AnchorSizes,
    AspectRatios,
    DetectorKind,
    densenet_fpn_detector,
)
from densevision.models.registry import create_model, register_model

WeightsArg = str | Path | None
PRESET_BACKBONES = ("rdnet_tiny", "vovnet39", "hardnet39ds", "hardnet68")
_FAMILIES = ("rdnet_", "vovnet", "hardnet")
_DETECTOR_CLASSES = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet, "fcos": FCOS}


def family_fpn_detector(
    *,
    kind: DetectorKind,
    backbone: str,
    num_classes: int = 91,
    weights_backbone: WeightsArg = None,
    trainable_stages: int | None = None,
    frozen_bn: bool | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: AnchorSizes | None = None,
    aspect_ratios: AspectRatios | None = None,
    fpn_channels: int = 256,
    memory_efficient: bool = False,
) -> nn.Module:
    """A torchvision detector on the registered RDNet / VoVNet / HarDNet backbone ``backbone``.

    Args:
        kind: ``"fasterrcnn"``, ``"maskrcnn"``, ``"retinanet"`` or ``"fcos"``.
        backbone: a registered backbone name of these families (``rdnet_tiny`` ... ``rdnet_large``,
            ``vovnet39/57/99``, ``hardnet39ds/68/85``).
        memory_efficient: recompute each backbone block in backward (gradient checkpointing).
        num_classes, weights_backbone, trainable_stages, frozen_bn, min_size, max_size, anchor_sizes,
            aspect_ratios, fpn_channels: see ``densenet_fpn_detector``; ``trainable_stages`` counts the
            stem and the four stride groups (0..5).

    Raises:
        ValueError: ``kind`` or ``backbone`` is unknown (the message lists the choices).
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {list(_KINDS)}")
    if not backbone.startswith(_FAMILIES):
        raise ValueError(
            f"backbone {backbone!r} is not an RDNet, VoVNet or HarDNet name; choose e.g. one of "
            f"{list(PRESET_BACKBONES)} (DenseNets: densenet_fpn_detector)"
        )
    body = create_model(
        backbone, features_only=True, out_features=_KINDS[kind].returned_stages,
        memory_efficient=memory_efficient,
    )
    return densenet_fpn_detector(
        kind=kind, backbone=body, num_classes=num_classes, weights_backbone=weights_backbone,
        trainable_stages=trainable_stages, frozen_bn=frozen_bn, min_size=min_size, max_size=max_size,
        anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios, fpn_channels=fpn_channels,
    )


def _make_preset(kind: DetectorKind, backbone: str):
    """A registered preset ``{kind}_{backbone}_fpn`` with a real signature (LightningCLI reads it)."""

    def preset(
        *, num_classes: int = 91, weights_backbone: WeightsArg = None, trainable_stages: int | None = None,
        frozen_bn: bool | None = None, min_size: int = 800, max_size: int = 1333,
        anchor_sizes: AnchorSizes | None = None, aspect_ratios: AspectRatios | None = None,
        fpn_channels: int = 256, memory_efficient: bool = False,
    ) -> nn.Module:
        return family_fpn_detector(
            kind=kind, backbone=backbone, num_classes=num_classes, weights_backbone=weights_backbone,
            trainable_stages=trainable_stages, frozen_bn=frozen_bn, min_size=min_size, max_size=max_size,
            anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios, fpn_channels=fpn_channels,
            memory_efficient=memory_efficient,
        )

    levels = "P2-P6" if _KINDS[kind].extra_levels == "pool" else "P3-P7"
    preset.__name__ = preset.__qualname__ = f"{kind}_{backbone}_fpn"
    preset.__doc__ = f"{_KIND_NAMES[kind]}, {backbone} + FPN ({levels}); see ``family_fpn_detector``."
    preset.__annotations__ = {**preset.__annotations__, "return": _DETECTOR_CLASSES[kind]}
    return register_model(preset)


for _kind in _DETECTOR_CLASSES:
    for _backbone in PRESET_BACKBONES:
        _preset = _make_preset(_kind, _backbone)
        globals()[_preset.__name__] = _preset  # importable by name, as a YAML class_path
del _kind, _backbone, _preset
