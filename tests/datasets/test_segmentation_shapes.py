"""The generated "shapes" dataset: deterministic, in the SegNet folder layout, read by the real loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from densevision.datasets import SegmentationFolder, ShapesDataModule, ensure_shapes_segmentation_dataset
from densevision.datasets.shapes_segmentation import SHAPES_CLASSES

TINY = {"image_size": 48, "num_train": 4, "num_val": 2, "num_test": 1}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_generation_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = files(ensure_shapes_segmentation_dataset(tmp_path / "a", seed=3, **TINY))
    b = files(ensure_shapes_segmentation_dataset(tmp_path / "b", seed=3, **TINY))
    c = files(ensure_shapes_segmentation_dataset(tmp_path / "c", seed=4, **TINY))
    assert len(a) == 2 * (4 + 2 + 1) and a == b
    assert a["train/00000.png"] != c["train/00000.png"]


def test_masks_are_palette_pngs_read_by_the_folder_loader(tmp_path: Path) -> None:
    root = ensure_shapes_segmentation_dataset(tmp_path, **TINY)
    assert Image.open(root / "trainannot" / "00000.png").mode == "P"
    dataset = SegmentationFolder(root, "train", num_classes=len(SHAPES_CLASSES), ignore_index=255)
    assert len(dataset) == 4 and dataset[0]["image"].shape == (3, 48, 48)
    # Background plus several object classes; no class is the whole image.
    assert (dataset.class_pixels > 0).sum() >= 3
    assert dataset.class_pixels.max() < dataset.class_pixels.sum()


def test_regenerates_when_parameters_change(tmp_path: Path) -> None:
    ensure_shapes_segmentation_dataset(tmp_path, **TINY)
    first = (tmp_path / "val" / "00000.png").stat().st_mtime_ns
    ensure_shapes_segmentation_dataset(tmp_path, **TINY)  # same parameters: kept
    assert (tmp_path / "val" / "00000.png").stat().st_mtime_ns == first
    ensure_shapes_segmentation_dataset(tmp_path, **{**TINY, "num_train": 2})
    assert len(list((tmp_path / "train").glob("*.png"))) == 2


def test_data_module_generates_on_first_use(tmp_path: Path) -> None:
    data = ShapesDataModule(
        root=str(tmp_path / "shapes"), batch_size=2, class_weighting="median_frequency", **TINY
    )
    assert not (tmp_path / "shapes").exists()
    weights = data.class_weights
    assert len(weights) == len(SHAPES_CLASSES) and np.median([w for w in weights if w > 0]) > 0
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 48, 48) and batch["mask"].shape == (2, 48, 48)
