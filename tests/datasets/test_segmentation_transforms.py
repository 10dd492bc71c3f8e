"""albumentations presets: image and mask stay aligned, padding uses the ignore index, eval is fixed."""

from __future__ import annotations

import numpy as np
import pytest

from densevision.datasets.transforms import AUGMENT_PRESETS, denormalize, segmentation_transform

COLORS = np.array([[250, 20, 20], [20, 250, 20], [20, 20, 250]], dtype=np.uint8)


def blocky_pair(height: int = 48, width: int = 64, block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A mask of large blocks of classes 0..2 (left-right asymmetric) and an image coloured by class."""
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((yy // block) * 2 + (xx // block) ** 2) % 3
    return COLORS[mask], mask.astype(np.uint8)


@pytest.mark.parametrize("augment", ["flip", "scale_crop"])
def test_image_and_mask_stay_aligned(augment: str) -> None:
    image, mask = blocky_pair()
    transform = segmentation_transform(augment, crop_size=(40, 40), scale_range=(0.75, 1.5), ignore_index=255)
    for seed in range(12):
        np.random.seed(seed)
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        picture, labels = denormalize(out["image"]), np.asarray(out["mask"])
        assert picture.shape[:2] == labels.shape
        for k, color in enumerate(COLORS):
            inside = labels == k
            if inside.sum() < 20:
                continue
            # The median colour where the mask says k is colour k (block edges blur only a few pixels).
            np.testing.assert_allclose(np.median(picture[inside], axis=0), color, atol=3)


def test_padding_uses_ignore_index() -> None:
    image, mask = blocky_pair(20, 20)
    transform = segmentation_transform(
        "scale_crop", crop_size=(32, 32), scale_range=(1.0, 1.0), ignore_index=11
    )
    out = transform(image=image, mask=mask)
    labels = np.asarray(out["mask"])
    assert labels.shape == (32, 32)
    assert (labels == 11).sum() == 32 * 32 - 20 * 20


def test_resize_and_eval_transform_is_deterministic() -> None:
    image, mask = blocky_pair()
    transform = segmentation_transform("none", resize=(24, 32))
    first, second = transform(image=image, mask=mask), transform(image=image, mask=mask)
    assert first["image"].shape == (3, 24, 32)
    assert np.array_equal(np.asarray(first["mask"]), np.asarray(second["mask"]))
    assert set(np.unique(np.asarray(first["mask"]))) <= {0, 1, 2}  # nearest neighbour: no new labels
    assert (first["image"] == second["image"]).all()


@pytest.mark.parametrize("preset", ["scale_crop_color", "scale_crop_photometric"])
def test_colour_jitter_changes_image_not_mask(preset: str) -> None:
    image, mask = blocky_pair()
    transform = segmentation_transform(preset, crop_size=(48, 64), scale_range=(1.0, 1.0))
    outputs = [transform(image=image, mask=mask) for _ in range(6)]
    assert any(not np.allclose(denormalize(o["image"]), image, atol=2) for o in outputs)
    for out in outputs:
        assert np.array_equal(np.asarray(out["mask"]), mask) or np.array_equal(
            np.asarray(out["mask"]), mask[:, ::-1]
        )


def test_bad_preset_arguments() -> None:
    assert "scale_crop_color" in AUGMENT_PRESETS
    with pytest.raises(ValueError, match=r"unknown augment preset 'rotate'; choose one of none, flip"):
        segmentation_transform("rotate")
    with pytest.raises(ValueError, match=r"augment='scale_crop' needs crop_size"):
        segmentation_transform("scale_crop")
