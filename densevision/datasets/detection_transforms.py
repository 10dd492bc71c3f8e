"""albumentations presets for detection: boxes, labels and instance masks move with the image.

Boxes are ``pascal_voc`` (xyxy pixels). ``labels`` and ``ann_index`` ride along as label fields, so when a
crop removes a box (or leaves less than ``min_visibility`` of it) the dataset drops its label and mask too.
Eval presets only scale isotropically and pad at the bottom/right, so a prediction maps back to the
original image by one factor (``DetectionTask`` does that with ``orig_size``).
"""

from __future__ import annotations

import albumentations as A
import cv2

_LABEL_FIELDS = ["labels", "ann_index"]
# cv2.INTER_NEAREST shifts masks by up to a pixel against the boxes; the exact variant does not
_MASK_RESIZE = cv2.INTER_NEAREST_EXACT


def _bbox_params(min_visibility: float) -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=_LABEL_FIELDS, min_visibility=min_visibility,
                        clip=True, filter_invalid_bboxes=True)


def letterbox(image_size: int) -> list[A.BasicTransform]:
    """Longest side to ``image_size``, then pad bottom/right to ``image_size x image_size`` (batching)."""
    return [
        A.LongestMaxSize(max_size=image_size, mask_interpolation=_MASK_RESIZE),
        A.PadIfNeeded(min_height=image_size, min_width=image_size, position="top_left",
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ]


def detection_train_transforms(
    image_size: int | None = None,
    *,
    hflip: float = 0.5,
    scale_limit: float = 0.25,
    min_visibility: float = 0.3,
    color_jitter: float = 0.2,
    seed: int | None = None,
) -> A.Compose:
    """Training augmentation: flip, random scale, colour jitter. With ``image_size`` the image is first
    resized (longest side) and, after scaling, randomly cropped / padded to ``image_size`` square: boxes
    are clipped to the crop and those keeping less than ``min_visibility`` of their area are dropped.
    ``seed`` fixes the random draws (tests); None = fresh randomness."""
    steps: list[A.BasicTransform] = [A.HorizontalFlip(p=hflip)]
    if image_size is not None:
        steps = [A.LongestMaxSize(max_size=image_size, mask_interpolation=_MASK_RESIZE), *steps]
    if scale_limit > 0:
        steps.append(A.RandomScale(scale_limit=scale_limit, mask_interpolation=_MASK_RESIZE, p=1.0))
        if image_size is not None:
            steps.append(A.RandomCrop(height=image_size, width=image_size, pad_if_needed=True,
                                      pad_position="top_left", border_mode=cv2.BORDER_CONSTANT))
    if color_jitter > 0:
        steps.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                   hue=0.0, p=0.8))
    return A.Compose(steps, bbox_params=_bbox_params(min_visibility), seed=seed)


def detection_eval_transforms(image_size: int | None = None) -> A.Compose:
    """Deterministic: letterbox to ``image_size`` or, with None, the image as read."""
    # NoOp: a Compose with box parameters but no transform warns "Got processor for bboxes" on every run
    steps = letterbox(image_size) if image_size is not None else [A.NoOp()]
    return A.Compose(steps, bbox_params=_bbox_params(0.0))
