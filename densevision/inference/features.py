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

from densevision.datasets.image_io import ImageFileError, ImageFiles, skipped_message
from densevision.datasets.transforms import MEAN, STD
from densevision.log import get_logger
from densevision.models import create_model

logger = get_logger(__name__)


class _ReadableImageFiles(ImageFiles):
    """``ImageFiles`` where an unreadable file gives ``(index, reason)`` instead of raising in a worker."""

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        try:
            return super().__getitem__(index)
        except ImageFileError as err:
            return index, str(err)


def _collate(batch: list[tuple[int, torch.Tensor | str]]) -> tuple[list[int], torch.Tensor | None, list]:
    """-> indices of the readable images, their stacked tensors (None if none), [(index, reason)]."""
    good = [(i, x) for i, x in batch if isinstance(x, torch.Tensor)]
    bad = [(i, x) for i, x in batch if not isinstance(x, torch.Tensor)]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


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
    strict: bool = False,
    kept: list[Path] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` (features-only backbone, or its ``inference_path``) over ``files``;
    -> ``{feature name: (N, C[, h, w]) array}`` of ``dtype``, one row per readable file.

    Unreadable files are skipped and listed in one warning (``strict``: the first raises
    ``ImageFileError``); ``kept``, when given, receives the files of the rows, in order.
    """
    dataset = _ReadableImageFiles(files, image_size, MEAN, STD)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    chunks: dict[str, list[np.ndarray]] = {spec.name: [] for spec in model.feature_info}
    skipped: list[tuple[Path, str]] = []
    rows: list[Path] = []
    for indices, images, bad in tqdm(loader, desc="extract", unit="batch", disable=not progress):
        if bad and strict:
            raise ImageFileError(bad[0][1])
        skipped += [(dataset.files[i], reason) for i, reason in bad]
        if images is None:
            continue
        rows += [dataset.files[i] for i in indices]
        for name, value in model(images).items():
            if pooled:
                value = F.adaptive_avg_pool2d(value, 1).flatten(1)
            chunks[name].append(value.to(dtype).numpy())
    if skipped:
        logger.warning(skipped_message(skipped, len(files)))
    if not rows:
        raise ImageFileError(f"none of the {len(files)} image(s) could be read")
    if kept is not None:
        kept[:] = rows
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
    relative = [f.relative_to(root).as_posix() if root.is_dir() else f.name for f in files]
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
