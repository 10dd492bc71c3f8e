"""The embedded detection dataset: coloured, textured shapes on a noisy background, generated from a seed.

Written as ``<root>/images/{train,val}/*.png`` + ``<root>/annotations/{train,val}.json`` in COCO format
(boxes and RLE instance masks), so it is read by the same ``CocoDetection`` as real data and Mask R-CNN can
train on it. Objects range from small (COCO "small", < 32x32 px) to large, overlap (a later shape hides
part of an earlier one; masks and boxes are of the visible part) and some images are empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from densevision.datasets.generated import generate_once

# name, base RGB colour; each class also has its own shape and texture (see _shape_mask / _texture)
CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("disc", (220, 50, 40)),
    ("square", (40, 90, 220)),
    ("triangle", (40, 180, 60)),
    ("cross", (230, 200, 40)),
)
CATEGORY_IDS = (3, 7, 11, 20)  # sparse on purpose, like COCO's: exercises the id <-> label mapping
_MIN_VISIBLE = 0.6  # an object keeps at least this fraction of its area when later objects overlap it
_FORMAT_VERSION = 1


def _shape_mask(kind: int, x: int, y: int, size: int, canvas: tuple[int, int]) -> np.ndarray:
    mask = Image.new("L", (canvas[1], canvas[0]), 0)
    draw = ImageDraw.Draw(mask)
    x2, y2 = x + size - 1, y + size - 1
    if kind == 0:
        draw.ellipse([x, y, x2, y2], fill=1)
    elif kind == 1:
        draw.rectangle([x, y, x2, y2], fill=1)
    elif kind == 2:
        draw.polygon([(x + size / 2, y), (x2, y2), (x, y2)], fill=1)
    else:
        bar = max(2, size // 3)
        offset = (size - bar) // 2
        draw.rectangle([x + offset, y, x + offset + bar - 1, y2], fill=1)
        draw.rectangle([x, y + offset, x2, y + offset + bar - 1], fill=1)
    return np.asarray(mask, dtype=bool)


def _texture(kind: int, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) colour layer of class ``kind``: base colour jittered, with a class-specific pattern."""
    base = np.array(CLASSES[kind][1], dtype=np.float32) + rng.uniform(-25, 25, size=3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    pattern = {0: np.zeros(shape), 1: ((xx // 3) % 2) * 30.0, 2: ((yy // 3) % 2) * 30.0,
               3: (((xx + yy) // 4) % 2) * 30.0}[kind]
    layer = base[None, None, :] - pattern[..., None] + rng.normal(0, 8, size=(*shape, 3))
    return layer.clip(0, 255)


def _background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    coarse = rng.uniform(60, 190, size=(shape[0] // 16 + 2, shape[1] // 16 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((shape[1], shape[0]), Image.BILINEAR), np.float32)
    gray = smooth.mean(axis=2, keepdims=True)  # low saturation so the coloured objects stand out
    return (0.7 * gray + 0.3 * smooth + rng.normal(0, 10, size=(*shape, 3))).clip(0, 255)


def _place_objects(rng: np.random.Generator, image_size: int, count: int) -> list[tuple[int, np.ndarray]]:
    """Up to ``count`` (class, visible mask) pairs; later objects are drawn over earlier ones."""
    canvas = (image_size, image_size)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(count * 10):
        if len(objects) == count:
            break
        kind = int(rng.integers(len(CLASSES)))
        # log-uniform sizes: as many small objects as large ones
        size = int(np.exp(rng.uniform(np.log(12), np.log(image_size * 0.5))))
        x, y = (int(v) for v in rng.integers(0, image_size - size, size=2))
        new = _shape_mask(kind, x, y, size, canvas)
        if all((m & ~new).sum() >= _MIN_VISIBLE * m.sum() for _, m in objects):
            objects = [(k, m & ~new) for k, m in objects] + [(kind, new)]
    return objects


def _render(rng: np.random.Generator, image_size: int, max_objects: int, empty_fraction: float):
    canvas = (image_size, image_size)
    image = _background(rng, canvas)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    objects = _place_objects(rng, image_size, count)
    for kind, mask in objects:
        image[mask] = _texture(kind, rng, canvas)[mask]
    return image.astype(np.uint8), objects


def _annotation(ann_id: int, image_id: int, kind: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": CATEGORY_IDS[kind], "bbox": [x, y, w, h],
            "area": float(mask_utils.area(rle)), "segmentation": rle, "iscrowd": 0}


def _write_split(root: Path, split: str, rng: np.random.Generator, num_images: int, image_size: int,
                 max_objects: int, empty_fraction: float, first_id: int) -> None:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for offset in range(num_images):
        image_id = first_id + offset
        pixels, objects = _render(rng, image_size, max_objects, empty_fraction)
        file_name = f"{split}/{image_id:06d}.png"
        Image.fromarray(pixels).save(root / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for index, (kind, mask) in enumerate(objects):
            annotations.append(_annotation(image_id * 100 + index, image_id, kind, mask))
    categories = [{"id": cid, "name": name, "supercategory": "shape"}
                  for cid, (name, _) in zip(CATEGORY_IDS, CLASSES, strict=True)]
    (root / "annotations").mkdir(exist_ok=True)
    payload = {"info": {"description": f"densevision synthetic shapes, {split}"}, "images": images,
               "annotations": annotations, "categories": categories}
    (root / "annotations" / f"{split}.json").write_text(json.dumps(payload))


def ensure_shapes_detection_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    num_train: int = 240,
    num_val: int = 60,
    image_size: int = 160,
    max_objects: int = 6,
    empty_fraction: float = 0.1,
) -> Path:
    """Write the embedded dataset to ``root`` unless the same one (same arguments) is already there.

    Returns:
        ``root``; images under ``root/images``, annotations ``root/annotations/{train,val}.json``.
    """
    params = {"version": _FORMAT_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val,
              "image_size": image_size, "max_objects": max_objects, "empty_fraction": empty_fraction}

    def write(root: Path) -> None:
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {image_size}")
        rng = np.random.default_rng(seed)
        root.mkdir(parents=True, exist_ok=True)
        drawing = (image_size, max_objects, empty_fraction)
        _write_split(root, "train", rng, num_train, *drawing, first_id=1)
        _write_split(root, "val", rng, num_val, *drawing, first_id=num_train + 1)

    return generate_once(root, "dataset.json", params, write)
