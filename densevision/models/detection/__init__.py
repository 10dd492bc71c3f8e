"""Detection models: torchvision's detectors on any densevision backbone + FPN through one factory
(``fpn_detector``), and the registered presets of the DenseNet, RDNet, VoVNet and HarDNet families
(registered on import)."""

from densevision.models.detection.densenet_fpn import densenet_fpn_detector
from densevision.models.detection.factory import (
    DETECTOR_KINDS,
    DetectorArgs,
    build_anchor_generator,
    create_detector,
    fpn_detector,
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
    "DETECTOR_KINDS",
    "DenseNetFPNBackbone",
    "DetectorArgs",
    "backbone_stages",
    "build_anchor_generator",
    "convert_to_frozen_batchnorm",
    "create_detector",
    "densenet_fpn_backbone",
    "densenet_fpn_detector",
    "family_fpn_detector",
    "fpn_detector",
    "freeze_stages",
]
