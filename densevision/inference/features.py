"""A backbone's multi-scale features for image files (the library side of ``densevision extract``;
its options and output file are described in ``densevision.apps.extract``).

The features come from a backbone preset (``densenet121``...), from the encoder of a segmentation preset
(``fcdensenet56``...), or from the encoder of a trained ``densevision fit`` run, with the normalisation the
run was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
from densevision.models import FeatureSpec, create_model, list_models
from densevision.models.features import select_features
from densevision.models.kinds import model_kind
from densevision.models.weights import load_state_dict_strict, load_weights_file
from densevision.tasks.checkpoints import load_task

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


# The families whose presets build a backbone (``features_only=True``); the other presets are segmenters,
# whose encoder is used, or detectors.
BACKBONE_PATTERNS = ("densenet*", "hardnet*", "rdnet*", "vovnet*")


def backbone_names() -> list[str]:
    """The registered presets that are backbones (``create_model(name, features_only=True)``)."""
    return sorted({name for pattern in BACKBONE_PATTERNS for name in list_models(pattern)})


class SelectedFeatures(nn.Module):
    """An encoder's feature dict limited to some of its features, as a backbone with ``features_only``.

    Args:
        encoder: returns ``{name: (N, C, H / stride, W / stride)}`` and describes it in ``feature_info``.
        names: the features to keep (None = all), returned high to low resolution.
    """

    features_only = True

    def __init__(self, encoder: nn.Module, names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_info: tuple[FeatureSpec, ...] = select_features(encoder.feature_info, names)
        self.in_chans = getattr(encoder, "in_chans", 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, in_chans, H, W) -> ``{name: (N, C, H / stride, W / stride)}`` for the kept features."""
        features = self.encoder(x)
        return {spec.name: features[spec.name] for spec in self.feature_info}


class _Encoder(nn.Module):
    """A segmenter's ``encode`` half as a module: (N, in_chans, H, W) -> its ``feature_info``'s features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_info = tuple(model.feature_info)
        self.in_chans = getattr(model, "in_chans", None) or 3

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.encode(x)


def encoder_of(model: nn.Module, what: str) -> nn.Module:
    """The feature extractor inside a segmentation model: its ``encoder`` or ``backbone`` submodule that
    describes its features in ``feature_info``, or its ``encode`` method where it has one.

    Args:
        model: a segmentation model (or a features-only backbone, returned as it is).
        what: how to name the model in the error (a preset name or a checkpoint path).

    Raises:
        ValueError: the model has no such encoder; the message lists the backbone presets.
    """
    if getattr(model, "features_only", False):
        return model
    # a detector's backbone speaks torchvision's FPN keys, not feature_info's: not a feature extractor here
    is_detector = model_kind(model) == "detection"
    for attribute in () if is_detector else ("encoder", "backbone"):
        part = getattr(model, attribute, None)
        if isinstance(part, nn.Module) and getattr(part, "feature_info", None):
            return part
    if not is_detector and callable(getattr(model, "encode", None)) and getattr(model, "feature_info", None):
        return _Encoder(model)  # a segmenter whose encoder is its own first half (FC-HarDNet)
    raise ValueError(
        f"{what} ({type(model).__name__}) has no encoder with a feature dict to extract from; use a backbone "
        f"({', '.join(backbone_names())}) or a segmentation model with one (fcdensenet*, tiramisu_*, "
        "denseaspp_*, deeplabv3plus_*)"
    )


def build_backbone(name: str, features: Sequence[str] | None, weights: str | None = None) -> nn.Module:
    """``create_model(name, features_only=True, out_features=features)``, in eval mode; for a segmentation
    preset (``fcdensenet56``...), its encoder's ``features``.

    Raises:
        ValueError: ``name`` is neither a backbone nor a segmenter with an encoder, or a feature is unknown.
        WeightsError: ``weights`` do not fit the model.
    """
    if name in backbone_names():
        return create_model(name, weights=weights, features_only=True, out_features=features).eval()
    model = create_model(name)
    encoder = encoder_of(model, f"model {name!r}")
    if weights is not None:  # the whole segmenter's state dict (as load_model_checkpoint reads it)
        load_state_dict_strict(model, load_weights_file(weights), str(weights))
    return SelectedFeatures(encoder, features).eval()


@dataclass(frozen=True)
class RunEncoder:
    """The encoder of a trained run and how its training fed images to it.

    Attributes:
        model: features-only module (``feature_info``, ``forward -> dict``), in eval mode.
        mean, std: the per-channel normalisation the run was trained with.
        input_size: (H, W) the run predicts at, or None when it did not save one.
        description: what the features come from, for the output file.
    """

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int] | None
    description: str


def load_run_encoder(checkpoint: str | Path, features: Sequence[str] | None = None) -> RunEncoder:
    """The encoder of a ``densevision fit`` run's checkpoint, with the run's saved ``mean`` / ``std``
    (``datasets.transforms.MEAN`` / ``STD`` for runs saved before they were recorded).

    Raises:
        CheckpointError: the checkpoint is not a ``densevision fit`` run's.
        ValueError: the run's model has no encoder (a detector), or a feature is unknown.
    """
    task = load_task(checkpoint)
    encoder = encoder_of(task.model, f"the model of {checkpoint}")
    hparams = getattr(task, "hparams", {})
    mean = getattr(task, "mean", None) or hparams.get("mean") or MEAN
    std = getattr(task, "std", None) or hparams.get("std") or STD
    input_size = getattr(task, "input_size", None)
    return RunEncoder(
        model=SelectedFeatures(encoder, features).eval(),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        input_size=None if input_size is None else (int(input_size[0]), int(input_size[1])),
        description=f"{Path(checkpoint).name}: {type(task.model).__name__} encoder",
    )


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
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> dict[str, np.ndarray]:
    """Run ``model`` (features-only backbone, or its ``inference_path``) over ``files``;
    -> ``{feature name: (N, C[, h, w]) array}`` of ``dtype``, one row per readable file.

    Unreadable files are skipped and listed in one warning (``strict``: the first raises
    ``ImageFileError``); ``kept``, when given, receives the files of the rows, in order. Images are
    normalised with ``mean`` / ``std`` (per channel, on [0, 1] pixels).
    """
    dataset = _ReadableImageFiles(files, image_size, mean, std)
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
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> None:
    """Write the ``.npz`` described in ``densevision.apps.extract``."""
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
        mean=np.array(mean, dtype=np.float64),
        std=np.array(std, dtype=np.float64),
    )
