"""A backbone's multi-scale features for image files (the library side of ``densevision extract``;
its options and output file are described in ``densevision.apps.extract``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from densevision.datasets.image_io import ImageFiles
from densevision.datasets.transforms import MEAN, STD
from densevision.models import create_model


def build_backbone(name: str, features: Sequence[str] | None, weights: str | None = None) -> nn.Module:
    """``create_model(name, features_only=True, out_features=features)``, in eval mode.

    Raises:
        ValueError: ``name`` is not a backbone (it has no ``features_only`` option) or a feature is unknown.
    """
    try:
        model = create_model(name, weights=weights, features_only=True, out_features=features)
    except TypeError as err:
        raise ValueError(
            f"model {name!r} is not a backbone with features_only / out_features ({err}); "
            "choose one of densevision.list_models('densenet*')"
        ) from err
    return model.eval()


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    files: Sequence[Path],
    *,
    image_size: Sequence[int],
    batch_size: int = 8,
    pooled: bool = False,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``model`` (features-only backbone, or its ``inference_path``) over ``files``;
    -> ``{feature name: (N, C[, h, w]) array}`` of ``dtype``."""
    dataset = ImageFiles(files, image_size, MEAN, STD)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    chunks: dict[str, list[np.ndarray]] = {spec.name: [] for spec in model.feature_info}
    for _, images in tqdm(loader, desc="extract", unit="batch", disable=not progress):
        for name, value in model(images).items():
            if pooled:
                value = F.adaptive_avg_pool2d(value, 1).flatten(1)
            chunks[name].append(value.to(dtype).numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def save_features(
    path: Path,
    features: dict[str, np.ndarray],
    model: nn.Module,
    model_name: str,
    files: Sequence[Path],
    root: Path,
    image_size: Sequence[int],
) -> None:
    """Write the ``.npz`` described in the module docstring."""
    specs = [spec for spec in model.feature_info if spec.name in features]
    relative = [str(f.relative_to(root)) if root.is_dir() else f.name for f in files]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        **features,
        feature_names=np.array([s.name for s in specs]),
        feature_channels=np.array([s.channels for s in specs], dtype=np.int64),
        feature_strides=np.array([s.stride for s in specs], dtype=np.int64),
        image_files=np.array(relative),
        image_size=np.array(image_size, dtype=np.int64),
        model=np.array(model_name),
    )
