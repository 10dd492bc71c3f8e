"""PASCAL VOC 2012 segmentation (Everingham et al., IJCV 2010) as published, with SBD's augmented masks.

Layout (``root`` is ``VOCdevkit/VOC2012`` from ``VOCtrainval_11-May-2012.tar``)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png              palette PNGs: indices 0..20, 255 on object boundaries
    root/ImageSets/Segmentation/{train,val,trainval}.txt     one <id> a line
    root/SegmentationClassAug/<id>.png           optional: SBD (Hariharan et al., ICCV 2011) masks
    root/ImageSets/Segmentation/train_aug.txt    optional: the 10582 SBD + VOC train ids, none of val

21 classes (0 = background); 255 marks the "difficult" band around every object and is ignored in loss
and score, as the VOC devkit does: the stored indices are the training ids, ``VOC_LABEL_MAP`` only rejects
values the dataset never stores. The benchmark scores each val image at its own size (about 500x375).
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from densevision.datasets.segmentation import LabelMap, Sample, SegmentationDataError
from densevision.datasets.segmentation_datamodule import (
    SCALE_CROP_RECIPE,
    SegmentationDataModule,
    SegmentationDataOptions,
    label_space,
)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
# The VOC devkit's colour map (VOCdevkit/VOCcode/VOClabelcolormap.m), the palette of its label PNGs.
VOC_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
)  # fmt: skip
IGNORE_INDEX = 255
VOC_LABEL_MAP = LabelMap(
    [*range(len(VOC_CLASSES)), *[-1] * (IGNORE_INDEX - len(VOC_CLASSES)), IGNORE_INDEX],
    stored="VOC class indices",
    fix="read VOC's palette PNGs as they are (SegmentationClass/ or SBD's SegmentationClassAug/), not "
    "SegmentationObject/ (instance ids) or masks saved as colours",
)


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """The ids of a VOC ``ImageSets`` file as ``(id, "<file> line <n>")``; blank lines are skipped and
    only the first field counts (``ImageSets/Main/<class>_<split>.txt`` lines carry a flag after it).

    Raises:
        FileNotFoundError: ``path`` is missing; names the split files that are there.
    """
    if not path.is_file():
        there = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"VOC split file {path} does not exist; "
            + (f"{path.parent} holds {there[:12]}" if there else f"{path.parent} holds no split files")
        )
    lines = path.read_text().splitlines()
    return [(line.split()[0], f"{path} line {n}") for n, line in enumerate(lines, start=1) if line.strip()]


# DeepLab's VOC recipe: 513x513 crops of 0.5-2x rescaled images; test reads val (labels not public).
VOC_LABEL_SPACE = label_space(VOC_CLASSES, VOC_COLORS, IGNORE_INDEX)
VOC_DEFAULTS: SegmentationDataOptions = {
    **SCALE_CROP_RECIPE, "batch_size": 16, "crop_size": (513, 513), "test_split": "val"
}


class VOCSegmentationDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 segmentation: 21 classes, boundaries (255) ignored, optionally SBD-augmented.

    Args:
        root: ``VOCdevkit/VOC2012``.
        aug_masks: a folder under ``root`` with SBD's masks converted to VOC PNGs (``SegmentationClassAug``);
            the training split then reads its masks there, and validation keeps VOC's own. None = VOC only.
        train_split, val_split, test_split, predict_split: ``ImageSets/Segmentation/<name>.txt`` each stage
            reads; with ``aug_masks`` set ``train_split`` is usually ``train_aug``. Test defaults to ``val``
            (VOC's test labels are not public).
        Others: :class:`SegmentationDataOptions`, over the defaults ``VOC_DEFAULTS``.

    Raises:
        SegmentationDataError: (at setup) the training list shares images with the validation list,
            which would score the model on images it trained on.
    """

    label_map = VOC_LABEL_MAP

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2012",
        *,
        aug_masks: str | None = None,
        **options: Unpack[SegmentationDataOptions],
    ) -> None:
        super().__init__(root, **VOC_LABEL_SPACE, **{**VOC_DEFAULTS, **options})
        self.aug_masks = aug_masks

    def _split_file(self, split: str) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def find_samples(self, stage: str, split: str) -> list[Sample]:
        listed = read_split_file(self._split_file(split))
        if not listed:
            raise SegmentationDataError(f"VOC split file {self._split_file(split)} lists no image ids")
        masks = self.root / (self.aug_masks if stage == "train" and self.aug_masks else "SegmentationClass")
        if not masks.is_dir():
            raise FileNotFoundError(f"VOC mask folder {masks} does not exist; check data.init_args.root"
                                    + (" and data.init_args.aug_masks" if self.aug_masks else ""))
        if stage == "train" and self._split_file(self.splits["val"]).is_file():
            val = {name for name, _ in read_split_file(self._split_file(self.splits["val"]))}
            shared = sorted({name for name, _ in listed} & val)
            if shared:
                raise SegmentationDataError(
                    f"{self._split_file(split)} shares {len(shared)} images with "
                    f"{self._split_file(self.splits['val'])} (e.g. {shared[0]}): training on validation "
                    "images inflates its score; use a training list without them (e.g. train_aug without val)"
                )
        images = self.root / "JPEGImages"
        return [
            Sample(images / f"{name}.jpg", masks / f"{name}.png", listed_in=where) for name, where in listed
        ]
