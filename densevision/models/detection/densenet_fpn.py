"""Registered DenseNet-FPN detectors: ``{fasterrcnn,maskrcnn,retinanet,fcos}_densenet{121,161,169,201}_fpn``
on an ImageNet DenseNet + 256-channel FPN, and ``*_densenet_tiny_fpn`` on a tiny CPU DenseNet + 64-channel
FPN. Each is ``create_detector`` (``densevision.models.detection.factory``) with its kind and backbone
fixed, taking the keyword arguments of ``DetectorArgs``.

Huang et al., "Densely Connected Convolutional Networks", CVPR 2017; detectors as in ``factory``.

Small backbone: the tiny presets (DenseNet k=16, blocks (2, 4, 6, 4), 32-channel stem, 64-channel FPN;
0.25M backbone and 0.8-1.5M parameters in all) train from scratch on a CPU; pass a small
``min_size``/``max_size`` (the image size) for speed.
"""

# No ``from __future__ import annotations``: the presets' return annotations stay classes, which
# LightningCLI reads to accept a preset as a ``class_path``.
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from typing_extensions import Unpack

from densevision.models.backbones.densenet import (
    DenseNet,
    DenseNetArgs,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
)
from densevision.models.detection.factory import DetectorArgs, DetectorKind, create_detector, fpn_detector
from densevision.models.registry import preset

# The factory's first name, from when it took DenseNets only; every family goes through it.
densenet_fpn_detector = fpn_detector


def _densenet_tiny(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet k=16, blocks (2, 4, 6, 4), 32-channel stem: 0.25M parameters, trains on a CPU."""
    return DenseNet(growth_rate=16, block_config=(2, 4, 6, 4), stem_channels=32, **kwargs)


def _tiny_detector(kind: DetectorKind, **kwargs: Unpack[DetectorArgs]) -> nn.Module:
    """``kind`` on the tiny DenseNet with a 64-channel FPN unless ``fpn_channels`` says otherwise."""
    return create_detector(kind, _densenet_tiny, **({"fpn_channels": 64} | kwargs))


@preset(create_detector, "fasterrcnn", densenet121)
def fasterrcnn_densenet121_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, DenseNet-121 + FPN (P2-P6)."""


@preset(create_detector, "fasterrcnn", densenet161)
def fasterrcnn_densenet161_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, DenseNet-161 + FPN (P2-P6)."""


@preset(create_detector, "fasterrcnn", densenet169)
def fasterrcnn_densenet169_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, DenseNet-169 + FPN (P2-P6)."""


@preset(create_detector, "fasterrcnn", densenet201)
def fasterrcnn_densenet201_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, DenseNet-201 + FPN (P2-P6)."""


@preset(_tiny_detector, "fasterrcnn")
def fasterrcnn_densenet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> FasterRCNN:
    """Faster R-CNN, tiny DenseNet + 64-channel FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", densenet121)
def maskrcnn_densenet121_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, DenseNet-121 + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", densenet161)
def maskrcnn_densenet161_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, DenseNet-161 + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", densenet169)
def maskrcnn_densenet169_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, DenseNet-169 + FPN (P2-P6)."""


@preset(create_detector, "maskrcnn", densenet201)
def maskrcnn_densenet201_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, DenseNet-201 + FPN (P2-P6)."""


@preset(_tiny_detector, "maskrcnn")
def maskrcnn_densenet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> MaskRCNN:
    """Mask R-CNN, tiny DenseNet + 64-channel FPN (P2-P6)."""


@preset(create_detector, "retinanet", densenet121)
def retinanet_densenet121_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, DenseNet-121 + FPN (P3-P7)."""


@preset(create_detector, "retinanet", densenet161)
def retinanet_densenet161_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, DenseNet-161 + FPN (P3-P7)."""


@preset(create_detector, "retinanet", densenet169)
def retinanet_densenet169_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, DenseNet-169 + FPN (P3-P7)."""


@preset(create_detector, "retinanet", densenet201)
def retinanet_densenet201_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, DenseNet-201 + FPN (P3-P7)."""


@preset(_tiny_detector, "retinanet")
def retinanet_densenet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> RetinaNet:
    """RetinaNet, tiny DenseNet + 64-channel FPN (P3-P7)."""


@preset(create_detector, "fcos", densenet121)
def fcos_densenet121_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, DenseNet-121 + FPN (P3-P7)."""


@preset(create_detector, "fcos", densenet161)
def fcos_densenet161_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, DenseNet-161 + FPN (P3-P7)."""


@preset(create_detector, "fcos", densenet169)
def fcos_densenet169_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, DenseNet-169 + FPN (P3-P7)."""


@preset(create_detector, "fcos", densenet201)
def fcos_densenet201_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, DenseNet-201 + FPN (P3-P7)."""


@preset(_tiny_detector, "fcos")
def fcos_densenet_tiny_fpn(**kwargs: Unpack[DetectorArgs]) -> FCOS:
    """FCOS, tiny DenseNet + 64-channel FPN (P3-P7)."""
