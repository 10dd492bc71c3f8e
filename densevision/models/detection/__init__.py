"""Detection models: DenseNet, RDNet, VoVNet and HarDNet + FPN on torchvision's detectors (registered on
import)."""

from densevision.models.detection.densenet_fpn import (
    build_anchor_generator,
    build_densenet_fpn,
    densenet_fpn_detector,
)
from densevision.models.detection.family_fpn import family_fpn_detector
from densevision.models.detection.fpn_backbone import (
    DenseNetFPNBackbone,
    backbone_stages,
    convert_to_frozen_batchnorm,
    densenet_fpn_backbone,
    freeze_stages,
)

__all__ = [
    "DenseNetFPNBackbone",
    "backbone_stages",
    "build_anchor_generator",
    "convert_to_frozen_batchnorm",
    "densenet_fpn_backbone",
    "build_densenet_fpn",
    "densenet_fpn_detector",
    "family_fpn_detector",
    "freeze_stages",
]
