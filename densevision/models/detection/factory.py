"""The one detector factory: torchvision's Faster R-CNN, Mask R-CNN, RetinaNet and FCOS on any densevision
backbone + FPN.

Ren et al., "Faster R-CNN", NeurIPS 2015; He et al., "Mask R-CNN", ICCV 2017; Lin et al., "Focal Loss for
Dense Object Detection", ICCV 2017; Tian et al., "FCOS", ICCV 2019.

The detectors are torchvision's; only the backbone (``DenseNetFPNBackbone``) and the choices torchvision's
``*_resnet50_fpn`` builders make are reproduced: R-CNNs use C2..C5 + max-pool P6 with one anchor size per
level (8 x stride: 32..512), RetinaNet and FCOS use C3..C5 + conv P6/P7 from P5, with three octave scales
(4 x stride x 2^(k/3)) or one point (size = stride) per location. Default anchors follow the strides, so
they stay right when ``returned_stages`` changes. The backbone is read through its ``feature_info`` alone,
its weights load through its ``load_weights`` and its stages freeze through its ``stage_groups``, so every
family (DenseNet, RDNet, VoVNet, HarDNet) takes the same path.

Labels: every detector takes ``num_classes`` including slot 0, and targets use labels ``1..num_classes-1``.
Faster/Mask R-CNN treat 0 as background; RetinaNet and FCOS score each slot with a sigmoid and slot 0 is
never a target (torchvision's COCO convention: 91 = the 90 COCO category ids + 0). So one dataset with
labels 1..K trains every kind with ``num_classes=K+1``.

The registered presets (``densenet_fpn.py``, ``family_fpn.py``) are ``create_detector`` with a kind and a
backbone preset fixed; ``fpn_detector`` takes any features-only backbone, e.g. from YAML::

    model:
      class_path: densevision.models.detection.fpn_detector
      init_args:
        kind: fcos
        num_classes: 6
        fpn_channels: 64
        backbone:
          class_path: densevision.models.backbones.DenseNet
          init_args: {growth_rate: 12, block_config: [2, 4, 6, 4], features_only: true}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from typing_extensions import TypedDict, Unpack

from densevision.models.detection.fpn_backbone import DenseNetFPNBackbone, densenet_fpn_backbone
from densevision.models.features import FeatureSpec
from densevision.models.necks.fpn import ExtraLevels

DetectorKind = Literal["fasterrcnn", "maskrcnn", "retinanet", "fcos"]
AnchorSizes = Sequence[Sequence[int]]
AspectRatios = Sequence[Sequence[float]]


@dataclass(frozen=True)
class KindDefaults:
    """One detector kind: its torchvision class and what torchvision's ``<kind>_resnet50_fpn`` builder
    uses, as a function of the feature strides.

    Attributes:
        detector: the torchvision class.
        title: its name in prose (preset docstrings, messages).
        returned_stages: backbone features fed to the FPN.
        extra_levels: the FPN's extra levels (``"pool"``: P6 by max-pool; ``"p6p7"``: two strided convs).
        sizes: anchor sizes of a map of the given stride.
        aspect_ratios: anchor aspect ratios of every map.
    """

    detector: type[nn.Module]
    title: str
    returned_stages: tuple[str, ...]
    extra_levels: ExtraLevels
    sizes: Callable[[int], tuple[int, ...]]
    aspect_ratios: tuple[float, ...]

    @property
    def pyramid(self) -> str:
        """The pyramid levels in words: ``"P2-P6"`` or ``"P3-P7"`` for the default stages."""
        return "P2-P6" if self.extra_levels == "pool" else "P3-P7"


_RCNN = {"returned_stages": ("c2", "c3", "c4", "c5"), "extra_levels": "pool", "sizes": lambda s: (8 * s,),
         "aspect_ratios": (0.5, 1.0, 2.0)}  # fmt: skip
DETECTOR_KINDS: dict[str, KindDefaults] = {
    "fasterrcnn": KindDefaults(FasterRCNN, "Faster R-CNN", **_RCNN),
    "maskrcnn": KindDefaults(MaskRCNN, "Mask R-CNN", **_RCNN),
    # three octave scales per level, as torchvision's RetinaNet: 32 x (1, 2^(1/3), 2^(2/3)) at stride 8
    "retinanet": KindDefaults(
        RetinaNet, "RetinaNet", ("c3", "c4", "c5"), "p6p7",
        lambda s: tuple(int(4 * s * 2 ** (k / 3)) for k in range(3)), (0.5, 1.0, 2.0),
    ),
    "fcos": KindDefaults(FCOS, "FCOS", ("c3", "c4", "c5"), "p6p7", lambda s: (s,), (1.0,)),
}


def _kind(kind: str) -> KindDefaults:
    if kind not in DETECTOR_KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {list(DETECTOR_KINDS)}")
    return DETECTOR_KINDS[kind]


def _check_per_map(name: str, values: Sequence, maps: Sequence[FeatureSpec]) -> list[tuple]:
    described = ", ".join(spec.name for spec in maps)
    if len(values) != len(maps):
        raise ValueError(
            f"{name} has {len(values)} entries but the backbone returns {len(maps)} feature maps "
            f"({described}): give one tuple per map, finest first"
        )
    for i, entry in enumerate(values):
        if isinstance(entry, (int, float)) or not entry or any(v <= 0 for v in entry):
            raise ValueError(
                f"{name}[{i}] = {entry!r}: each entry must be a non-empty tuple of positive values for map "
                f"{maps[i].name}, e.g. {name}=((32,), (64,), ...)"
            )
    return [tuple(entry) for entry in values]


def build_anchor_generator(
    kind: DetectorKind,
    maps: Sequence[FeatureSpec],
    anchor_sizes: AnchorSizes | None = None,
    aspect_ratios: AspectRatios | None = None,
) -> AnchorGenerator:
    """The anchor generator for ``kind`` over the pyramid ``maps`` (torchvision's defaults when None).

    Raises:
        ValueError: the number of size / ratio tuples differs from the number of maps, an entry is not a
            tuple of positive values, the maps get different anchor counts per location (the head is
            shared by all maps), or FCOS gets more than one anchor per location.
    """
    defaults = _kind(kind)
    sizes = [defaults.sizes(spec.stride) for spec in maps] if anchor_sizes is None else anchor_sizes
    ratios = [defaults.aspect_ratios] * len(maps) if aspect_ratios is None else aspect_ratios
    sizes = _check_per_map("anchor_sizes", sizes, maps)
    ratios = _check_per_map("aspect_ratios", ratios, maps)
    per_location = [len(s) * len(r) for s, r in zip(sizes, ratios, strict=True)]
    if len(set(per_location)) > 1:
        raise ValueError(
            f"anchors per location (sizes x aspect ratios) differ between maps: {per_location}; the "
            "detector head is shared by all maps, so give every map the same number of sizes and ratios"
        )
    if kind == "fcos" and per_location[0] != 1:
        raise ValueError(
            f"FCOS predicts one point per location, but anchor_sizes x aspect_ratios gives {per_location[0]}"
            " anchors per location: give one size and aspect_ratios ((1.0,),) * number of maps"
        )
    return AnchorGenerator(tuple(sizes), tuple(ratios))


def _rcnn_heads(kind: DetectorKind, backbone: DenseNetFPNBackbone, num_classes: int) -> dict[str, nn.Module]:
    """RoI poolers on the backbone's level names and heads whose widths follow the FPN's (equal to
    torchvision's defaults at 256 channels: 1024-wide box MLP, four 256-channel mask convs)."""
    channels = backbone.out_channels
    heads: dict[str, nn.Module] = {
        "box_roi_pool": MultiScaleRoIAlign(backbone.featmap_names, output_size=7, sampling_ratio=2),
        "box_head": TwoMLPHead(channels * 7 * 7, 4 * channels),
        "box_predictor": FastRCNNPredictor(4 * channels, num_classes),
    }
    if kind == "maskrcnn":
        heads["mask_roi_pool"] = MultiScaleRoIAlign(backbone.featmap_names, output_size=14, sampling_ratio=2)
        heads["mask_head"] = MaskRCNNHeads(channels, (channels,) * 4, 1)
        heads["mask_predictor"] = MaskRCNNPredictor(channels, channels, num_classes)
    return heads


def _check_detector_args(
    kind: DetectorKind, num_classes: int, min_size: int, max_size: int, fpn_channels: int,
    detections_per_img: int = 100,
) -> None:
    _kind(kind)
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (slot 0 plus at least one class: labels run 1..num_classes-1), "
            f"got {num_classes}"
        )
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if fpn_channels < 1:
        raise ValueError(f"fpn_channels must be >= 1, got {fpn_channels}")
    if detections_per_img < 1:
        raise ValueError(f"detections_per_img must be >= 1, got {detections_per_img}")
    if kind == "fcos" and fpn_channels % 32:
        raise ValueError(
            f"FCOS's head normalises with GroupNorm(32, fpn_channels): fpn_channels must be a multiple "
            f"of 32, got {fpn_channels}"
        )


def fpn_detector(
    *,
    kind: DetectorKind,
    backbone: nn.Module,
    num_classes: int = 91,
    weights_backbone: str | Path | None = None,
    trainable_stages: int | None = None,
    frozen_bn: bool | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: AnchorSizes | None = None,
    aspect_ratios: AspectRatios | None = None,
    fpn_channels: int = 256,
    returned_stages: Sequence[str] | None = None,
    detections_per_img: int = 100,
) -> nn.Module:  # a Union would not be accepted as a YAML class_path target
    """A torchvision detector on any features-only densevision backbone.

    Args:
        kind: ``"fasterrcnn"``, ``"maskrcnn"``, ``"retinanet"`` or ``"fcos"``.
        backbone: a ``FeatureBackbone`` (``DenseNet``, ``RDNet``, ``VoVNet``, ``HarDNet``) built with
            ``features_only=True``; read through its ``feature_info`` alone, and changed in place.
        num_classes: classes including slot 0 (labels 1..num_classes-1; see the module docstring).
        weights_backbone: local state-dict file for the backbone, loaded by its ``load_weights``
            (DenseNet: torchvision or densevision format; RDNet / VoVNet: timm format).
        trainable_stages: how many of the backbone's last stages train (its ``stage_groups``: stem + one
            per stride, 0..5 for ImageNet DenseNets); default 3 with ``weights_backbone``, else all.
        frozen_bn: use ``FrozenBatchNorm2d`` in the backbone; default True with ``weights_backbone``, else
            False (frozen statistics of an untrained network would be meaningless).
        min_size, max_size: torchvision's resize: shorter side to ``min_size``, longer side at most
            ``max_size``.
        anchor_sizes: one tuple of sizes (pixels) per pyramid map, finest first; default from the strides.
        aspect_ratios: one tuple of height/width ratios per pyramid map.
        fpn_channels: FPN width (256 in the papers); R-CNN head widths follow it.
        returned_stages: backbone features fed to the FPN (default c2..c5 for R-CNN, c3..c5 otherwise).
        detections_per_img: the most detections kept per image in eval mode (torchvision's
            ``box_detections_per_img`` / ``detections_per_img``; 100 as COCO scores them).

    Returns:
        The torchvision detector: ``model(images, targets)`` gives the loss dict in train mode, and
        ``model(images)`` a list of ``{"boxes": (K, 4), "labels": (K,), "scores": (K,)[, "masks":
        (K, 1, H, W)]}`` in eval mode, for a list of (3, H, W) float images in [0, 1].
    """
    _check_detector_args(kind, num_classes, min_size, max_size, fpn_channels, detections_per_img)
    defaults = DETECTOR_KINDS[kind]
    # As torchvision: with pretrained weights, freeze BatchNorm and the first two stages by default.
    pretrained = weights_backbone is not None
    with_fpn = densenet_fpn_backbone(
        backbone,
        returned_stages=defaults.returned_stages if returned_stages is None else returned_stages,
        extra_levels=defaults.extra_levels,
        out_channels=fpn_channels,
        weights=weights_backbone,
        frozen_bn=pretrained if frozen_bn is None else frozen_bn,
        trainable_stages=3 if trainable_stages is None and pretrained else trainable_stages,
    )
    anchors = build_anchor_generator(kind, with_fpn.feature_info, anchor_sizes, aspect_ratios)
    common = {"min_size": min_size, "max_size": max_size}
    if kind in ("retinanet", "fcos"):
        return defaults.detector(
            with_fpn, num_classes, anchor_generator=anchors, detections_per_img=detections_per_img, **common
        )
    # num_classes goes to the predictors built here; torchvision requires None when predictors are given.
    return defaults.detector(
        with_fpn, None, rpn_anchor_generator=anchors, **_rcnn_heads(kind, with_fpn, num_classes),
        box_detections_per_img=detections_per_img, **common,
    )


class DetectorArgs(TypedDict, total=False):
    """Keyword arguments of every registered detector preset (``**kwargs: Unpack[DetectorArgs]``, so a
    YAML typo still fails when parsed); defaults and meanings as ``fpn_detector``'s.

    Attributes:
        memory_efficient: recompute each backbone block in backward (gradient checkpointing).
    """

    num_classes: int
    weights_backbone: str | Path | None
    trainable_stages: int | None
    frozen_bn: bool | None
    min_size: int
    max_size: int
    anchor_sizes: AnchorSizes | None
    aspect_ratios: AspectRatios | None
    fpn_channels: int
    detections_per_img: int
    memory_efficient: bool


def create_detector(
    kind: DetectorKind, backbone: Callable[..., nn.Module], *, memory_efficient: bool = False,
    **kwargs: Unpack[DetectorArgs],
) -> nn.Module:
    """What every registered detector preset runs: ``backbone`` (a backbone preset or builder) made
    features-only with the kind's stages, then ``fpn_detector``.

    Raises:
        ValueError: an unknown ``kind``, or an argument ``fpn_detector`` refuses.
    """
    body = backbone(
        features_only=True, out_features=_kind(kind).returned_stages, memory_efficient=memory_efficient
    )
    return fpn_detector(kind=kind, backbone=body, **kwargs)
