"""Registered detectors on the DenseNet descendants: ``{fasterrcnn,maskrcnn,retinanet,fcos}_{backbone}_fpn``
for backbone in ``PRESET_BACKBONES`` (e.g. ``fcos_rdnet_tiny_fpn``, ``fasterrcnn_vovnet39_fpn``), each
``create_detector`` (``densevision.models.detection.factory``) with its kind and backbone fixed, taking the
keyword arguments of ``DetectorArgs``; ``family_fpn_detector`` takes any other RDNet, VoVNet or HarDNet by
name. ``weights_backbone`` is a local file: timm format for RDNet and VoVNet (``rdnet_tiny``,
``ese_vovnet39b``), densevision's own for HarDNet.

Backbones: Kim et al., "DenseNets Reloaded", ECCV 2024; Lee & Park, "CenterMask", CVPR 2020 (VoVNetV2);
Chao et al., "HarDNet", ICCV 2019. Detectors as in ``factory``.
"""

# No ``from __future__ import annotations``: the presets' return annotations stay classes, which
# LightningCLI reads to accept a preset as a ``class_path``.
from functools import partial

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from typing_extensions import Unpack

from densevision.models.backbones.hardnet import hardnet39ds, hardnet68
from densevision.models.backbones.rdnet import rdnet_tiny
from densevision.models.backbones.vovnet import vovnet39
from densevision.models.detection.factory import DetectorArgs, DetectorKind, create_detector
from densevision.models.registry import create_model, preset

PRESET_BACKBONES = ("rdnet_tiny", "vovnet39", "hardnet39ds", "hardnet68")
_FAMILIES = ("rdnet_", "vovnet", "hardnet")


def family_fpn_detector(*, kind: DetectorKind, backbone: str, **kwargs: Unpack[DetectorArgs]) -> nn.Module:
    """A torchvision detector on the registered RDNet / VoVNet / HarDNet backbone named ``backbone``
    (``rdnet_tiny`` ... ``rdnet_large``, ``vovnet39/57/99``, ``hardnet39ds/68/85``): ``create_detector``
    with the backbone looked up by name; ``trainable_stages`` counts the stem and the four stride groups
    (0..5).

    Raises:
        ValueError: ``kind`` or ``backbone`` is unknown (the message lists the choices).
    """
    if not backbone.startswith(_FAMILIES):
        raise ValueError(
            f"backbone {backbone!r} is not an RDNet, VoVNet or HarDNet name; choose e.g. one of "
            f"{list(PRESET_BACKBONES)} (DenseNets: densenet_fpn_detector)"
        )
    return create_detector(kind, partial(create_model, backbone), **kwargs)


@preset(create_detector, "fasterrcnn", rdnet_tiny)
def fasterrcnn_rdnet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, RDNet-T + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", rdnet_tiny)
def maskrcnn_rdnet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, RDNet-T + FPN (P2-P6)."""


@preset(create_detector, "retinanet", rdnet_tiny)
def retinanet_rdnet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, RDNet-T + FPN (P3-P7)."""


@preset(create_detector, "fcos", rdnet_tiny)
def fcos_rdnet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, RDNet-T + FPN (P3-P7)."""


@preset(create_detector, "fasterrcnn", vovnet39)
def fasterrcnn_vovnet39_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, VoVNet-V2-39 (eSE) + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", vovnet39)
def maskrcnn_vovnet39_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, VoVNet-V2-39 (eSE) + FPN (P2-P6)."""


@preset(create_detector, "retinanet", vovnet39)
def retinanet_vovnet39_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, VoVNet-V2-39 (eSE) + FPN (P3-P7)."""


@preset(create_detector, "fcos", vovnet39)
def fcos_vovnet39_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, VoVNet-V2-39 (eSE) + FPN (P3-P7)."""


@preset(create_detector, "fasterrcnn", hardnet39ds)
def fasterrcnn_hardnet39ds_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, HarDNet-39DS + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", hardnet39ds)
def maskrcnn_hardnet39ds_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, HarDNet-39DS + FPN (P2-P6)."""


@preset(create_detector, "retinanet", hardnet39ds)
def retinanet_hardnet39ds_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, HarDNet-39DS + FPN (P3-P7)."""


@preset(create_detector, "fcos", hardnet39ds)
def fcos_hardnet39ds_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, HarDNet-39DS + FPN (P3-P7)."""


@preset(create_detector, "fasterrcnn", hardnet68)
def fasterrcnn_hardnet68_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, HarDNet-68 + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", hardnet68)
def maskrcnn_hardnet68_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, HarDNet-68 + FPN (P2-P6)."""


@preset(create_detector, "retinanet", hardnet68)
def retinanet_hardnet68_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, HarDNet-68 + FPN (P3-P7)."""


@preset(create_detector, "fcos", hardnet68)
def fcos_hardnet68_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, HarDNet-68 + FPN (P3-P7)."""
