"""densevision: dense-connectivity computer vision (DenseNet backbones, FC-DenseNet segmentation,
DenseNet-FPN detection)."""

from densevision.inference.model_folder import load_model
from densevision.inference.optimize import optimize_for_inference
from densevision.models import FeatureSpec, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "FeatureSpec", "__version__", "create_model", "list_models", "load_model", "optimize_for_inference",
]
