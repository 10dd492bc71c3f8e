"""albumentations pipelines for segmentation: one call transforms image and mask together.

Presets (chosen by name in the YAML configs, ``augment:``):

- ``none``: resize (optional) + normalise: the deterministic evaluation pipeline.
- ``flip``: + horizontal flip.
- ``scale_crop``: + random scale, pad (mask padded with the ignore index) and random crop, flip.
- ``scale_crop_color``: ``scale_crop`` + colour jitter (brightness, contrast, saturation, hue).
- ``scale_crop_photometric``: ``scale_crop`` + stronger colour jitter, gamma, blur or sensor noise, and
  now and then grey: lighting and camera changes between streets (the image only; masks are untouched).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import cv2
import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # imported by the pipelines that use it: prediction's preprocess_image needs none
    import albumentations as A

AugmentPreset = Literal["none", "flip", "scale_crop", "scale_crop_color", "scale_crop_photometric"]
AUGMENT_PRESETS: tuple[str, ...] = get_args(AugmentPreset)

# ImageNet statistics: what torchvision's DenseNet weights expect, and fine for training from scratch. Only
# defaults: a run's own mean / std are data module arguments, saved with the task (``SegmentationTask``).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def preprocess_image(
    image: np.ndarray,
    *,
    size: tuple[int, int] | None = None,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> np.ndarray:
    """The one image preprocessing of evaluation and prediction, on every backend.

    Args:
        image: (H, W, 3) uint8 RGB.
        size: (height, width) to resize to (bilinear, as ``A.Resize`` in training); None = as is.
        mean, std: per-channel statistics of images scaled to [0, 1].

    Returns:
        (3, h, w) float32, contiguous: ``(image / 255 - mean) / std``.
    """
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    # the same arithmetic as A.Normalize (max_pixel_value 255), so training and prediction agree bit for bit
    mean_px = np.asarray(mean, dtype=np.float32) * 255.0
    inv_std = np.float32(1.0) / (np.asarray(std, dtype=np.float32) * 255.0)
    out = (image.astype(np.float32) - mean_px) * inv_std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def segmentation_transform(
    augment: AugmentPreset = "none",
    *,
    resize: tuple[int, int] | None = None,
    crop_size: tuple[int, int] | None = None,
    scale_range: tuple[float, float] = (0.75, 1.5),
    ignore_index: int | None = None,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> A.Compose:
    """The pipeline of an augmentation preset.

    Args:
        augment: preset name (see module docstring).
        resize: (height, width) every image and mask is resized to first (masks by nearest neighbour).
        crop_size: (height, width) of the random crop of the ``scale_crop*`` presets; required by them.
        scale_range: random scale factor range of the ``scale_crop*`` presets.
        ignore_index: mask value used to pad masks; None pads with 0 (the first class).
        mean, std: normalisation statistics (images scaled to [0, 1]).

    Returns:
        ``A.Compose`` called as ``t(image=HxWx3 uint8, mask=HxW)`` -> ``{"image": (3, H, W) float tensor,
        "mask": (H, W) tensor}``.
    """
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    steps: list[A.BasicTransform] = []
    if resize is not None:
        steps.append(A.Resize(*resize, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    if augment.startswith("scale_crop"):
        if crop_size is None:
            raise ValueError(f"augment={augment!r} needs crop_size=(height, width)")
        low, high = scale_range
        steps += [
            A.RandomScale(scale_limit=(low - 1, high - 1), mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.PadIfNeeded(
                *crop_size,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0 if ignore_index is None else ignore_index,
            ),
            A.RandomCrop(*crop_size),
        ]
    if augment != "none":
        steps.append(A.HorizontalFlip(p=0.5))
    if augment == "scale_crop_color":
        steps.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8))
    if augment == "scale_crop_photometric":
        steps += [
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.OneOf(
                [A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.GaussNoise(std_range=(0.02, 0.06), p=1.0)], p=0.3
            ),
            A.ToGray(p=0.05),
        ]
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(steps)


class EvaluationTransform:
    """What a segmentation model sees at evaluation and prediction (``preprocess_image``): the image resized
    to the run's ``resize`` (bilinear, as in training) and normalised; a mask, when given, stays at its own
    size, so scores are taken at the labels' resolution (logits are resized to it before the argmax).

    Called as ``t(image=HxWx3 uint8[, mask=HxW])`` -> ``{"image": (3, h, w) float tensor[, "mask": (H, W)
    int64 tensor]}``.
    """

    def __init__(
        self, resize: tuple[int, int] | None = None, mean: Sequence[float] = MEAN, std: Sequence[float] = STD
    ) -> None:
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def __call__(self, *, image: np.ndarray, mask: np.ndarray | None = None) -> dict:
        x = preprocess_image(image, size=self.resize, mean=self.mean, std=self.std)
        out = {"image": torch.from_numpy(x)}
        if mask is not None:
            out["mask"] = torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.int64)
        return out


def denormalize(image: Tensor, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> np.ndarray:
    """A normalised (3, H, W) tensor -> (H, W, 3) uint8 RGB array, for pictures."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    array = image.detach().cpu().float().numpy() * std + mean
    return (array.clip(0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
