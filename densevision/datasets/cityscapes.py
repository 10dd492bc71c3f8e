"""Cityscapes (Cordts et al., CVPR 2016) as published: ``leftImg8bit/`` + ``gtFine/``, 19 evaluated classes.

Layout (``root`` is the folder the two zips ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``
unpack into)::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

with ``<split>`` ``train`` (2975 images, 18 cities), ``val`` (500, 3 cities) or ``test`` (1525, labels not
public). The label files store the 34 ``labelIds`` of cityscapesScripts' ``helpers/labels.py``; 19 of them
are evaluated and become train ids 0..18, every other id becomes 255 (ignored), the mapping that script's
``trainId`` column defines (``CITYSCAPES_LABELS`` below, written out from it). The benchmark scores each val
image at its full 1024x2048 resolution; the configs predict it through sliding windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Unpack

from densevision.datasets.segmentation import LabelMap, Sample, SegmentationDataError
from densevision.datasets.segmentation_datamodule import (
    SCALE_CROP_RECIPE,
    SegmentationDataModule,
    SegmentationDataOptions,
    label_space,
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
IGNORE_INDEX = 255


class CityscapesLabel(NamedTuple):
    """One row of cityscapesScripts' ``labels.py``: the id stored in ``labelIds`` PNGs, its train id."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


# cityscapesScripts helpers/labels.py (ids 0..33; 'license plate', id -1, is never written to labelIds PNGs).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel(0, "unlabeled", 255, (0, 0, 0)),
    CityscapesLabel(1, "ego vehicle", 255, (0, 0, 0)),
    CityscapesLabel(2, "rectification border", 255, (0, 0, 0)),
    CityscapesLabel(3, "out of roi", 255, (0, 0, 0)),
    CityscapesLabel(4, "static", 255, (0, 0, 0)),
    CityscapesLabel(5, "dynamic", 255, (111, 74, 0)),
    CityscapesLabel(6, "ground", 255, (81, 0, 81)),
    CityscapesLabel(7, "road", 0, (128, 64, 128)),
    CityscapesLabel(8, "sidewalk", 1, (244, 35, 232)),
    CityscapesLabel(9, "parking", 255, (250, 170, 160)),
    CityscapesLabel(10, "rail track", 255, (230, 150, 140)),
    CityscapesLabel(11, "building", 2, (70, 70, 70)),
    CityscapesLabel(12, "wall", 3, (102, 102, 156)),
    CityscapesLabel(13, "fence", 4, (190, 153, 153)),
    CityscapesLabel(14, "guard rail", 255, (180, 165, 180)),
    CityscapesLabel(15, "bridge", 255, (150, 100, 100)),
    CityscapesLabel(16, "tunnel", 255, (150, 120, 90)),
    CityscapesLabel(17, "pole", 5, (153, 153, 153)),
    CityscapesLabel(18, "polegroup", 255, (153, 153, 153)),
    CityscapesLabel(19, "traffic light", 6, (250, 170, 30)),
    CityscapesLabel(20, "traffic sign", 7, (220, 220, 0)),
    CityscapesLabel(21, "vegetation", 8, (107, 142, 35)),
    CityscapesLabel(22, "terrain", 9, (152, 251, 152)),
    CityscapesLabel(23, "sky", 10, (70, 130, 180)),
    CityscapesLabel(24, "person", 11, (220, 20, 60)),
    CityscapesLabel(25, "rider", 12, (255, 0, 0)),
    CityscapesLabel(26, "car", 13, (0, 0, 142)),
    CityscapesLabel(27, "truck", 14, (0, 0, 70)),
    CityscapesLabel(28, "bus", 15, (0, 60, 100)),
    CityscapesLabel(29, "caravan", 255, (0, 0, 90)),
    CityscapesLabel(30, "trailer", 255, (0, 0, 110)),
    CityscapesLabel(31, "train", 16, (0, 80, 100)),
    CityscapesLabel(32, "motorcycle", 17, (0, 0, 230)),
    CityscapesLabel(33, "bicycle", 18, (119, 11, 32)),
)
_EVALUATED = sorted(
    (label for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX), key=lambda label: label.train_id
)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(label.name for label in _EVALUATED)
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = tuple(label.color for label in _EVALUATED)
CITYSCAPES_LABEL_MAP = LabelMap(
    [label.train_id for label in CITYSCAPES_LABELS],
    stored="Cityscapes gtFine labelIds",
    fix="read the *_gtFine_labelIds.png files (not *_color.png, *_instanceIds.png or *_labelTrainIds.png, "
    "which store colours, instances or train ids already mapped)",
)


def find_cityscapes_samples(root: Path, split: str, *, skip_bad: bool = False) -> list[Sample]:
    """Every ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with its ``gtFine`` ``labelIds`` file.

    Raises:
        FileNotFoundError: ``leftImg8bit/<split>`` is missing or holds no images.
        SegmentationDataError: a city folder has images but no label files (unless ``skip_bad``: then its
            samples reach the dataset's checks, which skip and count them).
    """
    images_dir, labels_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"Cityscapes image folder {images_dir} does not exist; unpack leftImg8bit_trainvaltest.zip into "
            f"{root} (data.init_args.root is the folder holding leftImg8bit/ and gtFine/)"
        )
    samples = []
    for city in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        images = sorted(city.glob(f"*{IMAGE_SUFFIX}"))
        labels = labels_dir / city.name
        if images and not skip_bad and not any(labels.glob(f"*{LABEL_SUFFIX}")):
            raise SegmentationDataError(
                f"city folder {city} holds {len(images)} images but {labels} holds no *{LABEL_SUFFIX} files; "
                f"unpack gtFine_trainvaltest.zip into {root} (or set data.init_args.skip_bad true to skip "
                "and count them)"
            )
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            samples.append(Sample(image, labels / f"{stem}{LABEL_SUFFIX}"))
    if not samples:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} images in the city folders of {images_dir}")
    return samples


# The usual Cityscapes recipe: 512x1024 crops of 0.5-2x rescaled images; test reads val (labels not public).
CITYSCAPES_LABEL_SPACE = label_space(CITYSCAPES_CLASSES, CITYSCAPES_COLORS, IGNORE_INDEX)
CITYSCAPES_DEFAULTS: SegmentationDataOptions = {
    **SCALE_CROP_RECIPE, "batch_size": 8, "crop_size": (512, 1024), "test_split": "val"
}


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes fine annotations: 19 classes, 255 ignored, labelIds mapped to train ids when read.

    Validation and test both read the ``val`` split by default (the test split's labels are not public;
    its scores come from the benchmark server), each image at its full 1024x2048 size unless ``resize``
    is set (masks always stay at full size: scores are taken at the labels' resolution).

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        train_split, val_split, test_split, predict_split: the ``<split>`` folder each stage reads.
        Others: :class:`SegmentationDataOptions`, over the defaults ``CITYSCAPES_DEFAULTS``.
    """

    label_map = CITYSCAPES_LABEL_MAP

    def __init__(self, root: str = "data/cityscapes", **options: Unpack[SegmentationDataOptions]) -> None:
        super().__init__(root, **CITYSCAPES_LABEL_SPACE, **{**CITYSCAPES_DEFAULTS, **options})

    def find_samples(self, stage: str, split: str) -> Sequence[Sample]:
        return find_cityscapes_samples(self.root, split, skip_bad=self.skip_bad)
