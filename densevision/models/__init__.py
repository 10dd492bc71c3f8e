"""Models: backbones, necks, segmentation and detection models, and the model registry."""

from densevision.models import backbones, detection, segmentation
from densevision.models.features import FeatureBackbone, FeatureSpec
from densevision.models.registry import create_model, list_models, register_model

__all__ = [
    "FeatureBackbone",
    "FeatureSpec",
    "backbones",
    "create_model",
    "detection",
    "list_models",
    "register_model",
    "segmentation",
]
