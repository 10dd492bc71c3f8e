"""Miniature replicas of the published Cityscapes, PASCAL VOC 2012 (+ SBD aug) and ADE20K SceneParsing trees:
the same folder and file names, suffixes, id encodings and split files, a few tiny generated images.
``docs/guides/datasets.md`` shows the trees these functions build; other tests import them too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from densevision.datasets.voc import VOC_COLORS

CITYSCAPES_FRAMES = {
    "train": {"aachen": ["aachen_000000_000019", "aachen_000001_000019"], "bochum": ["bochum_000000_000313"]},
    "val": {"frankfurt": ["frankfurt_000000_000294", "frankfurt_000000_000576"]},
}
VOC_IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042"]}
VOC_AUG_ONLY = ["2008_000002"]  # an SBD image: in train_aug.txt and SegmentationClassAug/ only
ADE_NAMES = {"training": ["ADE_train_00000001", "ADE_train_00000002"],
             "validation": ["ADE_val_00000001", "ADE_val_00000002"]}  # fmt: skip


def _rgb(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def halves(height: int, width: int, left: int, right: int) -> np.ndarray:
    """(H, W) uint8 mask: ``left`` in the left half, ``right`` in the right half."""
    mask = np.full((height, width), left, dtype=np.uint8)
    mask[:, width // 2 :] = right
    return mask


def every_id(height: int, width: int, ids: int) -> np.ndarray:
    """(H, W) uint8 mask cycling through 0..ids-1 in reading order, so every stored id appears."""
    return (np.arange(height * width) % ids).reshape(height, width).astype(np.uint8)


def cityscapes_replica(root: Path, size: tuple[int, int] = (64, 128)) -> Path:
    """``root/leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` + ``root/gtFine/<split>/<city>/<frame>
    _gtFine_{labelIds,color,instanceIds}.png`` and ``_polygons.json``. The first train frame's labelIds
    hold every id 0..33 (``every_id``); the others hold road (7) on the left and ids 0..6 on the right."""
    rng = np.random.default_rng(0)
    height, width = size
    for split, cities in CITYSCAPES_FRAMES.items():
        for city, frames in cities.items():
            images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for n, frame in enumerate(frames):
                _rgb(rng, height, width).save(images / f"{frame}_leftImg8bit.png")
                if split == "train" and n == 0 and city == "aachen":
                    ids = every_id(height, width, 34)
                else:
                    ids = halves(height, width, 7, 0)
                    ids[: height // 2, width // 2 :] = rng.integers(1, 7, (height // 2, width - width // 2))
                Image.fromarray(ids).save(labels / f"{frame}_gtFine_labelIds.png")
                Image.fromarray(np.zeros((height, width, 4), np.uint8)).save(
                    labels / f"{frame}_gtFine_color.png"
                )
                Image.fromarray(ids.astype(np.uint16)).save(labels / f"{frame}_gtFine_instanceIds.png")
                (labels / f"{frame}_gtFine_polygons.json").write_text('{"imgHeight": 1024, "objects": []}')
    return root


def _voc_png(mask: np.ndarray) -> Image.Image:
    """A VOC label PNG: mode P with the devkit's palette (255 = the boundary colour 224, 224, 192)."""
    image = Image.fromarray(mask)  # mode L; putpalette makes it P, its values the palette indices
    palette = [v for color in VOC_COLORS for v in color] + [0, 0, 0] * (255 - len(VOC_COLORS))
    palette += [224, 224, 192]
    image.putpalette(palette)
    return image


def voc_replica(root: Path, sizes: tuple[tuple[int, int], ...] = ((30, 40), (36, 28))) -> Path:
    """``root`` = ``VOCdevkit/VOC2012``: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette,
    the object in the left half, 255 on its border column, background right), ``ImageSets/Segmentation/
    {train,val,trainval,train_aug}.txt``, ``SegmentationClassAug/<id>.png`` (mode L), images of two sizes."""
    rng = np.random.default_rng(1)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    all_ids = [*VOC_IDS["train"], *VOC_IDS["val"], *VOC_AUG_ONLY]
    for n, name in enumerate(all_ids):
        height, width = sizes[n % len(sizes)]
        _rgb(rng, height, width).save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        mask = halves(height, width, 1 + n % 20, 0)
        mask[:, width // 2 - 1] = 255
        if name not in VOC_AUG_ONLY:
            _voc_png(mask).save(root / "SegmentationClass" / f"{name}.png")
        if name not in VOC_IDS["val"]:
            Image.fromarray(mask).save(root / "SegmentationClassAug" / f"{name}.png")
    split_dir = root / "ImageSets" / "Segmentation"
    for split, names in (*VOC_IDS.items(), ("trainval", VOC_IDS["train"] + VOC_IDS["val"]),
                         ("train_aug", VOC_IDS["train"] + VOC_AUG_ONLY)):  # fmt: skip
        (split_dir / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return root


def ade20k_replica(root: Path, sizes: tuple[tuple[int, int], ...] = ((30, 40), (40, 34))) -> Path:
    """``root`` = ``ADEChallengeData2016``: ``images/{training,validation}/<name>.jpg`` and
    ``annotations/.../<name>.png`` (mode L: 1 = wall on the left, 0 = other on the right; the first
    training annotation holds every stored value 0..150), images of two sizes."""
    rng = np.random.default_rng(2)
    for split, names in ADE_NAMES.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for n, name in enumerate(names):
            height, width = sizes[n % len(sizes)]
            _rgb(rng, height, width).save(root / "images" / split / f"{name}.jpg", quality=90)
            first = (split, n) == ("training", 0)
            mask = every_id(height, width, 151) if first else halves(height, width, 1, 0)
            Image.fromarray(mask).save(root / "annotations" / split / f"{name}.png")
    return root


# VOC2007-style detection: per image (width, height) and its objects (name, difficult, xmin, ymin, xmax, ymax)
VOC_DETECTION = {
    "000005": ((64, 48), [("chair", 0, 10, 12, 30, 40), ("chair", 1, 40, 5, 60, 20)]),
    "000007": ((56, 64), [("car", 0, 3, 8, 50, 60)]),
    "000009": ((64, 48), [("horse", 0, 20, 10, 60, 45), ("person", 0, 1, 1, 15, 30)]),
    "000012": ((48, 56), [("car", 0, 5, 5, 40, 50)]),
}
VOC_DETECTION_SPLITS = {"trainval": ["000005", "000007", "000009"], "test": ["000012", "000005"]}


def _voc_xml(name: str, size: tuple[int, int], objects: list) -> str:
    """An annotation as the VOC2007 devkit writes it (tabs, ``pose``/``truncated``, 1-based corners)."""
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{name}.jpg</filename>\n"
             f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n"
             "\t</size>\n\t<segmented>0</segmented>\n"]  # fmt: skip
    for cls, difficult, xmin, ymin, xmax, ymax in objects:
        parts.append(f"\t<object>\n\t\t<name>{cls}</name>\n\t\t<pose>Unspecified</pose>\n"
                     f"\t\t<truncated>0</truncated>\n\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n"
                     f"\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>\n"
                     f"\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n")  # fmt: skip
    return "".join(parts) + "</annotation>\n"


def voc_detection_replica(root: Path) -> Path:
    """``root`` = ``VOCdevkit/VOC2007``: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and
    ``ImageSets/Main/{trainval,test}.txt`` plus a per-class list (``chair_trainval.txt``), as published."""
    rng = np.random.default_rng(3)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for name, (size, objects) in VOC_DETECTION.items():
        _rgb(rng, size[1], size[0]).save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        (root / "Annotations" / f"{name}.xml").write_text(_voc_xml(name, size, objects))
    for split, names in VOC_DETECTION_SPLITS.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    flags = [f"{n} {1 if n == '000005' else -1}\n" for n in VOC_DETECTION_SPLITS["trainval"]]
    (root / "ImageSets" / "Main" / "chair_trainval.txt").write_text("".join(flags))
    return root


REPLICA_OF_CONFIG = {"cityscapes_": (cityscapes_replica, "cityscapes"),
                     "voc_": (voc_replica, "VOCdevkit/VOC2012"),
                     "ade20k_": (ade20k_replica, "ADEChallengeData2016")}  # fmt: skip


def benchmark_replica(config: str, parent: Path) -> Path | None:
    """The replica a ``configs/segmentation/<config>`` of a benchmark dataset reads (built under ``parent``
    on first use), or None for the other configs (CamVid layout and generated data)."""
    for prefix, (build, relative) in REPLICA_OF_CONFIG.items():
        if config.startswith(prefix):
            root = parent / prefix.rstrip("_") / relative
            return root if root.is_dir() else build(root)
    return None
