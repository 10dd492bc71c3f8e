"""The embedded segmentation dataset "shapes": generated deterministically from a seed, no download.

Each image has a cluttered background (grey-ish colour gradient, blurred colour noise, lines and plain
distractor polygons of any colour, all labelled background) and 2-5 objects whose class is their texture
(stripes, checkerboard, dots or speckle; two tones of a hue, mostly the class's hue family; random
orientation, scale and brightness) on a random shape (ellipse, rotated rectangle, polygon, star).
Objects overlap (later ones occlude earlier ones), sizes vary about 4x, and the image gets sensor noise;
off-family hues and the distractors make colour alone insufficient.

It is written in the SegNet folder layout (``train/ trainannot/ val/ valannot/ test/ testannot/``) with
palette PNG masks, so the same loader that reads CamVid reads it.
"""

from __future__ import annotations

import colorsys
import shutil
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np
from PIL import Image

from densevision.datasets.generated import generate_once

SHAPES_CLASSES = ("background", "stripes", "checker", "dots", "speckle")
SHAPES_COLORS = ((60, 60, 60), (230, 60, 50), (60, 200, 70), (60, 110, 240), (240, 200, 40))
# Most objects of a class share a hue family; plain background distractors take any hue.
_CLASS_HUES = (0.0, 0.0, 0.33, 0.62, 0.14)
SPLITS = ("train", "val", "test")
_MANIFEST = "shapes.json"


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = (_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.25, 0.9)) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    blobs = cv2.GaussianBlur(rng.normal(0, 40, (size, size, 3)).astype(np.float32), (0, 0), size / 12)
    image = image + blobs * 3
    for _ in range(rng.integers(3, 9)):
        p0, p1 = rng.integers(0, size, (2, 2))
        color = rng.uniform(0, 255, 3).tolist()
        cv2.line(image, tuple(int(v) for v in p0), tuple(int(v) for v in p1), color, int(rng.integers(1, 3)))
    # Plain (untextured) distractors in any colour, including the object classes' hues.
    for _ in range(rng.integers(1, 4)):
        distractor = _polygon(rng, size, rng.uniform(0.06, 0.16) * size)
        color = _rgb(rng.uniform(), rng.uniform(0.5, 1), rng.uniform(0.5, 1))
        cv2.fillPoly(image, [distractor], color.tolist())
    return image


def _texture(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """(size, size, 3) float texture of class ``kind`` (1..4): the class's pattern in two tones of a hue
    (mostly near the class's hue), with random angle, scale and brightness."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    if kind == 1:  # stripes
        pattern = (np.sin(2 * np.pi * u / rng.uniform(6, 12)) > 0).astype(np.float32)
    elif kind == 2:  # checkerboard
        cell = rng.uniform(4, 8)
        pattern = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif kind == 3:  # dots on a lattice
        step = rng.uniform(7, 11)
        du, dv = (u % step) - step / 2, (v % step) - step / 2
        pattern = (du**2 + dv**2 < (step * rng.uniform(0.25, 0.35)) ** 2).astype(np.float32)
    else:  # speckle
        pattern = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), 1.0)
        pattern = (pattern - pattern.min()) / (np.ptp(pattern) + 1e-6)
    # 10% of objects take any hue: the hue family is a strong hint, texture the rule.
    hue = _CLASS_HUES[kind] + rng.uniform(-0.06, 0.06) if rng.uniform() < 0.9 else rng.uniform()
    c0 = _rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.25, 0.5))
    c1 = _rgb(hue, rng.uniform(0.3, 0.9), rng.uniform(0.75, 1.0))
    return c0 * (1 - pattern[..., None]) + c1 * pattern[..., None]


def _polygon(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    center = rng.uniform(0.1, 0.9, 2) * size
    corners = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = radius * rng.uniform(0.6, 1.0, corners)
    points = center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    return points.round().astype(np.int32)


def _shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) bool mask of one random shape, radius 8-30% of the image."""
    mask = np.zeros((size, size), np.uint8)
    radius = rng.uniform(0.08, 0.3) * size
    center = tuple(int(v) for v in rng.uniform(0.1, 0.9, 2) * size)
    kind = rng.integers(0, 4)
    if kind == 0:
        axes = (int(radius), int(radius * rng.uniform(0.5, 1.0)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        box = cv2.boxPoints((center, (2 * radius, 2 * radius * rng.uniform(0.4, 1.0)), rng.uniform(0, 180)))
        cv2.fillPoly(mask, [box.round().astype(np.int32)], 1)
    elif kind == 2:
        cv2.fillPoly(mask, [_polygon(rng, size, radius)], 1)
    else:
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, np.pi)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.5)
        points = np.asarray(center) + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
        cv2.fillPoly(mask, [points.round().astype(np.int32)], 1)
    return mask.astype(bool)


def render_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image and its (size, size) uint8 class-index mask."""
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 6)):
        kind = int(rng.integers(1, len(SHAPES_CLASSES)))
        region = _shape_mask(rng, size)
        image[region] = _texture(rng, kind, size)[region]
        mask[region] = kind
    image = image + rng.normal(0, rng.uniform(3, 12), image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def _write_split(root: Path, split: str, count: int, seed: int, size: int) -> None:
    palette = [c for color in SHAPES_COLORS for c in color]
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        # One generator per sample: a split's content does not depend on the other splits' sizes.
        rng = np.random.default_rng([seed, SPLITS.index(split), index])
        image, mask = render_sample(rng, size)
        Image.fromarray(image).save(root / split / f"{index:05d}.png")
        mask_png = Image.fromarray(mask).convert("P")
        mask_png.putpalette(palette)
        mask_png.save(root / f"{split}annot" / f"{index:05d}.png")


class ShapesGeneration(TypedDict, total=False):
    """The generation parameters of :func:`ensure_shapes_segmentation_dataset` (defaults there)."""

    seed: int
    image_size: int
    num_train: int
    num_val: int
    num_test: int


def ensure_shapes_segmentation_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 96,
    num_train: int = 320,
    num_val: int = 64,
    num_test: int = 64,
) -> Path:
    """Generates the dataset into ``root`` unless a copy with the same parameters is already there.

    Returns:
        ``root`` as a Path.
    """
    params = {
        "seed": seed, "image_size": image_size, "num_train": num_train, "num_val": num_val,
        "num_test": num_test, "classes": list(SHAPES_CLASSES),
    }  # fmt: skip

    def write(root: Path) -> None:
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
            shutil.rmtree(root / f"{split}annot", ignore_errors=True)
        for split, count in zip(SPLITS, (num_train, num_val, num_test), strict=True):
            _write_split(root, split, count, seed, image_size)

    return generate_once(root, _MANIFEST, params, write)
