"""Models: backbones, necks, segmentation and detection models, and the model registry."""

# fused_dense_block plugs the fused CPU dense blocks into the reference path
# (``layers.DenseBlock.fused_forward``) when imported: importing the package makes them every model's default.
from densevision.models import backbones, detection, fused_dense_block, segmentation
from densevision.models.features import FeatureBackbone, FeatureSpec
from densevision.models.registry import create_model, list_models, register_model

__all__ = [
    "FeatureBackbone",
    "FeatureSpec",
    "backbones",
    "create_model",
    "detection",
    "fused_dense_block",
    "list_models",
    "register_model",
    "segmentation",
]
