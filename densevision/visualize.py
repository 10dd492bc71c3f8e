"""Pictures a person can look at: class palettes, mask overlays, legends, side-by-side panels, detections.

Segmentation arrays are numpy: images (H, W, 3) uint8 RGB, masks (H, W) integer class indices. Detections
are drawn on torchvision's (3, H, W) tensors, with its ``draw_bounding_boxes`` / ``draw_segmentation_masks``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

Color = tuple[int, int, int]
IGNORE_COLOR: Color = (0, 0, 0)
# one colour per detected class (cycled), the same for its boxes and masks; torchvision's default palette
# starts with black, invisible on dark images
DETECTION_COLORS: tuple[Color, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def default_palette(num_classes: int) -> tuple[Color, ...]:
    """``num_classes`` distinct, saturated colours (golden-ratio hue steps), the same for every call."""
    colors = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95 if i % 2 == 0 else 0.7)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colors)


def colorize(mask: np.ndarray, colors: Sequence[Color], ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; ignored or unknown values are black."""
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(colors)), 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    out = lut[np.clip(mask, 0, len(lut) - 1)]
    if ignore_index is not None:
        out[mask == ignore_index] = IGNORE_COLOR
    return out


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colors: Sequence[Color],
    ignore_index: int | None = None,
    alpha: float = 0.55,
) -> np.ndarray:
    """Blends the colourised ``mask`` over ``image``; ignored pixels keep the image. (H, W, 3) uint8."""
    color = colorize(mask, colors, ignore_index).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + color * alpha
    if ignore_index is not None:
        keep = mask == ignore_index
        out[keep] = image[keep]
    return out.round().astype(np.uint8)


def legend(class_names: Sequence[str], colors: Sequence[Color], width: int = 160) -> Image.Image:
    """A column of colour swatches with class names."""
    font = ImageFont.load_default()
    row = 16
    picture = Image.new("RGB", (width, row * len(class_names) + 4), "white")
    draw = ImageDraw.Draw(picture)
    for i, (name, color) in enumerate(zip(class_names, colors, strict=True)):
        y = 2 + i * row
        draw.rectangle((4, y + 1, 18, y + row - 3), fill=tuple(color), outline="black")
        draw.text((24, y + 1), f"{i} {name}", fill="black", font=font)
    return picture


def side_by_side(
    image: np.ndarray,
    target: np.ndarray | None,
    prediction: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Color],
    ignore_index: int | None = None,
    min_height: int = 192,
) -> Image.Image:
    """image | ground-truth overlay | prediction overlay | legend, with titles, as one picture.

    Panels smaller than ``min_height`` are enlarged by a whole factor (nearest neighbour, so pixels stay
    visible as they are).
    """
    panels = [("image", image)]
    if target is not None:
        panels.append(("ground truth", overlay(image, target, colors, ignore_index)))
    panels.append(("prediction", overlay(image, prediction, colors)))
    key = legend(class_names, colors)
    factor = max(1, -(-min_height // image.shape[0]))
    height, width = image.shape[0] * factor, image.shape[1] * factor
    title, gap = 14, 4
    canvas = Image.new(
        "RGB", (len(panels) * (width + gap) + key.width, max(height + title, key.height + title)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for i, (name, panel) in enumerate(panels):
        x = i * (width + gap)
        draw.text((x + 2, 1), name, fill="black", font=ImageFont.load_default())
        canvas.paste(Image.fromarray(panel).resize((width, height), Image.Resampling.NEAREST), (x, title))
    canvas.paste(key, (len(panels) * (width + gap), title))
    return canvas


def draw_detections(
    image: Tensor,
    detection: dict[str, Tensor],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tensor:
    """``image`` (3, H, W), uint8 or float in [0, 1], with the detections above ``score_threshold`` drawn:
    masks (``(N, 1, H, W)`` probabilities) filled, boxes outlined, "name score" captions (the label number
    where ``class_names`` has no entry for it). Returns uint8 (3, H, W)."""
    keep = (detection["scores"] >= score_threshold) & (detection["labels"] > 0)
    picture = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if not bool(keep.any()):
        return picture
    labels = detection["labels"][keep].tolist()
    colors = [DETECTION_COLORS[label % len(DETECTION_COLORS)] for label in labels]
    if "masks" in detection:
        masks = detection["masks"][keep][:, 0] > mask_threshold
        picture = draw_segmentation_masks(picture, masks, alpha=0.45, colors=colors)
    names = [class_names[label] if label < len(class_names) else str(label) for label in labels]
    scores = detection["scores"][keep].tolist()
    captions = [f"{name} {score:.2f}" for name, score in zip(names, scores, strict=True)]
    return draw_bounding_boxes(picture, detection["boxes"][keep], labels=captions, colors=colors, width=2)


def _enlarged(image: Tensor, detection: dict[str, Tensor], factor: int) -> tuple[Tensor, dict[str, Tensor]]:
    """``image`` and its detections ``factor`` times larger (nearest neighbour, so pixels stay visible)."""
    if factor == 1:
        return image, detection
    big = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    out = dict(detection, boxes=detection["boxes"] * factor)
    if "masks" in detection:
        out["masks"] = detection["masks"].repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return big, out


def detection_side_by_side(
    image: Tensor,
    target: dict[str, Tensor] | None,
    detection: dict[str, Tensor],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
    min_height: int = 384,
) -> Image.Image:
    """ground truth | prediction, each titled, with class names and scores, enlarged by a whole factor to
    at least ``min_height`` pixels so names and boxes of small images can be read.

    Args:
        image: (3, H, W) uint8, or float in [0, 1].
        target: ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,)[, ``masks`` (N, H, W)], or None.
        detection: ``boxes``, ``labels``, ``scores``[, ``masks`` (K, 1, H, W) probabilities].
    """
    factor = max(1, -(-min_height // image.shape[-2]))
    panels = []
    if target is not None and "boxes" in target:
        truth = {"boxes": target["boxes"].float(), "labels": target["labels"],
                 "scores": torch.ones(len(target["labels"]))}
        if "masks" in target and len(target["masks"]):
            truth["masks"] = target["masks"][:, None].float()
        panels.append(("ground truth", _enlarged(image, truth, factor)))
    panels.append((f"prediction (score >= {score_threshold:g})", _enlarged(image, detection, factor)))
    drawn = [
        (title, draw_detections(picture, found, class_names, score_threshold=score_threshold if
                                title != "ground truth" else 0.0))
        for title, (picture, found) in panels
    ]
    height, width = drawn[0][1].shape[-2:]
    title_height, gap = 14, 4
    canvas = Image.new("RGB", (len(drawn) * (width + gap) - gap, height + title_height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture) in enumerate(drawn):
        x = i * (width + gap)
        draw.text((x + 2, 1), title, fill="black", font=ImageFont.load_default())
        canvas.paste(Image.fromarray(picture.permute(1, 2, 0).numpy()), (x, title_height))
    return canvas
