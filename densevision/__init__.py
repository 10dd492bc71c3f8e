"""densevision: dense-connectivity computer vision (DenseNet backbones, FC-DenseNet segmentation,
DenseNet-FPN detection)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names of _PUBLIC, for type checkers and the API reference
    from densevision.inference.model_folder import load_model
    from densevision.inference.optimize import optimize_for_inference
    from densevision.models import FeatureSpec, create_model, list_models

__version__ = "0.1.0"

# name -> module: imported on first use (PEP 562), so a command that needs none of them (predict on an
# OpenVINO export) does not pay for importing torch's model zoo at start-up
_PUBLIC = {
    "FeatureSpec": "densevision.models",
    "create_model": "densevision.models",
    "list_models": "densevision.models",
    "load_model": "densevision.inference.model_folder",
    "optimize_for_inference": "densevision.inference.optimize",
}

__all__ = [
    "FeatureSpec", "__version__", "create_model", "list_models", "load_model", "optimize_for_inference",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
