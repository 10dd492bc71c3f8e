"""Pictures a person can look at: class palettes, mask overlays, legends, side-by-side panels, detections.

Segmentation arrays are numpy: images (H, W, 3) uint8 RGB, masks (H, W) integer class indices; every
segmentation picture carries a legend of class names and colours. Detections are drawn on torchvision's
(3, H, W) tensors, with its ``draw_bounding_boxes`` / ``draw_segmentation_masks``; their captions (class
name and score) are drawn with Pillow on a filled background, sized relative to the image and stacked so
that no two overlap.

Segmentation pictures need numpy and Pillow only (torch and torchvision are imported by the detection
functions): ``densevision predict`` draws one overlay per image, so the blend works in place, the classes
present are counted rather than sorted, and a legend is drawn once per picture size, classes and palette,
then composited over the corner it covers.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from torch import Tensor

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


def _color_table(mask: np.ndarray, colors: Sequence[Color]) -> np.ndarray:
    """(K, 3) uint8: row k = the colour of class k, black for the classes ``colors`` does not cover."""
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(colors)), 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return lut


def colorize(mask: np.ndarray, colors: Sequence[Color], ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; ignored or unknown values are black."""
    lut = _color_table(mask, colors)
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
    """Blends the colourised ``mask`` over ``image``; ignored pixels keep the image. (H, W, 3) uint8.

    ``image * (1 - alpha) + colour * alpha`` in float32, rounded half to even; the colour term comes from a
    per-class table and the sum is formed in place (the same numbers, fewer passes over the picture).
    """
    lut = _color_table(mask, colors)
    weighted = lut.astype(np.float32) * alpha
    out = image.astype(np.float32)
    out *= 1 - alpha
    out += weighted[np.clip(mask, 0, len(lut) - 1)]
    if ignore_index is not None:
        keep = mask == ignore_index
        out[keep] = image[keep]
    return np.rint(out, out=out).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (its bitmap font where Pillow was built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, TypeError):
        return ImageFont.load_default()


def _text_color(background: Color) -> Color:
    """Black or white, whichever reads better on ``background`` (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_legend(
    picture: Image.Image,
    class_names: Sequence[str],
    colors: Sequence[Color],
    classes: Sequence[int] | None = None,
) -> Image.Image:
    """Draws a legend (a colour swatch and the name of each class) into the top-left corner of
    ``picture`` on a white, slightly transparent box, its text sized relative to the picture; in place.

    Args:
        picture: RGB picture.
        class_names: one name per class index; ``colors`` one colour per class index.
        classes: the class indices to list (e.g. those present in a mask); None = all.

    Returns:
        ``picture``.
    """
    classes = list(range(len(class_names))) if classes is None else list(classes)
    if not classes:
        return picture
    names = tuple(str(class_names[c]) for c in classes)
    swatches = tuple(tuple(int(v) for v in colors[c]) for c in classes)
    box, layer = _legend_layer(picture.size, names, swatches)
    # only the corner the legend covers is composited: elsewhere its layer is transparent
    corner = Image.alpha_composite(picture.crop(box).convert("RGBA"), layer).convert("RGB")
    picture.paste(corner, box[:2])
    return picture


@functools.lru_cache(maxsize=64)
def _legend_layer(
    size: tuple[int, int], names: tuple[str, ...], colors: tuple[Color, ...]
) -> tuple[tuple[int, int, int, int], Image.Image]:
    """The legend of ``draw_legend`` on a transparent RGBA layer of a ``size`` picture, cropped to the box
    it covers: (that box, the cropped layer). Cached: a folder of frames of one size shows few sets of
    classes, and drawing text is most of a legend's cost."""
    font_size = max(10, round(min(size) * 0.035))
    font, pad = _font(font_size), max(2, font_size // 4)
    row = font_size + pad
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text_width = max(draw.textlength(name, font=font) for name in names)
    draw.rectangle((0, 0, int(pad * 3 + font_size + text_width), pad + row * len(names)),
                   fill=(255, 255, 255, 215))  # fmt: skip
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        y = pad + i * row
        draw.rectangle((pad, y, pad + font_size, y + font_size), fill=(*color, 255), outline=(0, 0, 0, 255))
        draw.text((2 * pad + font_size, y + font_size / 2), name, fill=(0, 0, 0, 255), font=font, anchor="lm")
    box = layer.getbbox() or (0, 0, 1, 1)
    return box, layer.crop(box)


def labelled_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    class_names: Sequence[str] | None,
    colors: Sequence[Color],
    ignore_index: int | None = None,
    alpha: float = 0.55,
) -> np.ndarray:
    """``overlay`` with a legend of the classes present in ``mask`` (names and colours) drawn into its
    top-left corner: the picture ``densevision predict`` writes. (H, W, 3) uint8, the image's size.

    Args:
        class_names: one per class index; None or empty = ``class0``, ``class1``...
    """
    names = list(class_names or [f"class{i}" for i in range(len(colors))])
    present = [c for c in _classes_present(mask, min(len(names), len(colors))) if c != ignore_index]
    picture = Image.fromarray(overlay(image, mask, colors, ignore_index, alpha))
    return np.asarray(draw_legend(picture, names, colors, present))


def _classes_present(mask: np.ndarray, limit: int) -> list[int]:
    """The class indices in [0, ``limit``) that ``mask`` holds, ascending (counted: no sort of the mask)."""
    values = np.asarray(mask).ravel()
    if values.dtype.kind == "u" or (values.dtype.kind == "i" and values.min(initial=0) >= 0):
        return [int(c) for c in np.flatnonzero(np.bincount(values, minlength=limit)[:limit])]
    return [int(c) for c in np.unique(values) if 0 <= c < limit]


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
    show_scores: bool = True,
) -> Tensor:
    """``image`` (3, H, W), uint8 or float in [0, 1], with the detections above ``score_threshold`` drawn:
    masks (``(N, 1, H, W)`` probabilities) filled, boxes outlined, "name score" captions (the label number
    where ``class_names`` has no entry for it; the name alone without ``show_scores``) on a background of
    the class colour, at a size relative to the image, stacked where they would overlap. Returns uint8
    (3, H, W)."""
    import torch
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    keep = (detection["scores"] >= score_threshold) & (detection["labels"] > 0)
    picture = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if not bool(keep.any()):
        return picture
    order = detection["scores"][keep].argsort(descending=True)  # the surest captions get the best places
    labels = detection["labels"][keep][order].tolist()
    scores = detection["scores"][keep][order].tolist()
    boxes = detection["boxes"][keep][order]
    colors = [DETECTION_COLORS[label % len(DETECTION_COLORS)] for label in labels]
    if "masks" in detection:
        masks = detection["masks"][keep][order][:, 0] > mask_threshold
        picture = draw_segmentation_masks(picture, masks, alpha=0.45, colors=colors)
    width = max(2, round(min(picture.shape[-2:]) / 200))
    picture = draw_bounding_boxes(picture, boxes, colors=colors, width=width)
    names = [class_names[label] if label < len(class_names) else str(label) for label in labels]
    captions = [f"{name} {score:.2f}" if show_scores else name
                for name, score in zip(names, scores, strict=True)]  # fmt: skip
    drawn = Image.fromarray(picture.permute(1, 2, 0).numpy())
    draw_captions(drawn, boxes.tolist(), captions, colors)
    return torch.from_numpy(np.asarray(drawn).copy()).permute(2, 0, 1).contiguous()


def draw_captions(
    picture: Image.Image,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    colors: Sequence[Color],
) -> list[tuple[int, int, int, int]]:
    """Draws each caption on a filled rectangle of its colour at its box's top-left corner (above the
    box, or inside it at the picture's top edge), in place. A caption that would cover one drawn before
    moves down a row at a time until it covers none (so ``captions`` should come surest first); the text
    height is 3.5 % of the picture's shorter side (at least 10 pixels).

    Args:
        boxes: (x1, y1, x2, y2) pixels, one per caption.

    Returns:
        the caption rectangles (x1, y1, x2, y2) as drawn.
    """
    draw = ImageDraw.Draw(picture)
    size = max(10, round(min(picture.size) * 0.035))
    font, pad = _font(size), max(1, size // 5)
    height = size + 2 * pad
    placed: list[tuple[int, int, int, int]] = []
    for (x1, y1, _, _), caption, color in zip(boxes, captions, colors, strict=True):
        width = int(draw.textlength(caption, font=font)) + 2 * pad
        left = int(min(max(0, x1), max(0, picture.width - width)))
        top = int(y1) - height if y1 >= height else max(0, int(y1))
        rect = (left, top, left + width, top + height)
        for _ in range(len(placed) + 1):
            clash = [other for other in placed if _overlaps(rect, other)]
            if not clash:
                break
            top = max(other[3] for other in clash)
            rect = (left, top, left + width, top + height)
        placed.append(rect)
        draw.rectangle(rect, fill=tuple(color))
        draw.text((rect[0] + pad, rect[1] + height / 2), caption, fill=_text_color(tuple(color)), font=font,
                  anchor="lm")
    return placed


def picture_name(dataset: object, image_id: int) -> str:
    """``<image file stem>.png`` for an image of a COCO-style dataset (``dataset.coco.imgs[image_id]``
    with its ``file_name``), so a picture is found by the image's name; ``<image_id>.png`` where the
    dataset has no file names."""
    images = getattr(getattr(dataset, "coco", None), "imgs", None) or {}
    file_name = images.get(image_id, {}).get("file_name")
    return f"{Path(file_name).stem}.png" if file_name else f"{image_id}.png"


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
    import torch

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
        (title, draw_detections(picture, found, class_names, score_threshold=0.0, show_scores=False)
         if title == "ground truth" else
         draw_detections(picture, found, class_names, score_threshold=score_threshold))
        for title, (picture, found) in panels
    ]  # fmt: skip
    height, width = drawn[0][1].shape[-2:]
    title_height, gap = 14, 4
    canvas = Image.new("RGB", (len(drawn) * (width + gap) - gap, height + title_height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture) in enumerate(drawn):
        x = i * (width + gap)
        draw.text((x + 2, 1), title, fill="black", font=ImageFont.load_default())
        canvas.paste(Image.fromarray(picture.permute(1, 2, 0).numpy()), (x, title_height))
    return canvas
