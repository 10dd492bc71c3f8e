"""Pictures: segmentation overlays and detections drawn."""

from __future__ import annotations

import numpy as np
import torch

from densevision.visualize import (
    DETECTION_COLORS,
    default_palette,
    detection_side_by_side,
    draw_detections,
    overlay,
)


def _detection() -> dict[str, torch.Tensor]:
    masks = torch.zeros(3, 1, 48, 48)
    masks[0, 0, 4:10, 4:10] = 1
    return {"boxes": torch.tensor([[4.0, 4, 10, 10], [20, 20, 30, 30], [12, 36, 18, 44]]),
            "labels": torch.tensor([1, 2, 7]), "scores": torch.tensor([0.9, 0.1, 0.8]), "masks": masks}


def test_draw_detections_draws_only_confident_boxes_and_masks():
    picture = draw_detections(torch.zeros(3, 48, 48), _detection(), ["bg", "a", "b"], score_threshold=0.5)
    assert picture.dtype == torch.uint8 and picture.shape == (3, 48, 48)
    assert picture[:, 6, 6].any()  # the mask is filled
    assert not picture[:, 21:30, 29].any()  # the low-score box is not drawn
    # label 7 has no name: it is still drawn (captioned by its number), in its class colour
    assert tuple(picture[:, 43, 15].tolist()) == DETECTION_COLORS[7]  # its bottom edge


def test_draw_detections_keeps_a_uint8_image_and_returns_it_when_nothing_is_confident():
    image = torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8)
    detection = {k: v[1:2] for k, v in _detection().items()}
    torch.testing.assert_close(draw_detections(image, detection, [], score_threshold=0.5), image)


def test_overlay_blends_class_colours():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 1], [1, 0, 0]])
    colors = default_palette(2)
    out = overlay(image, mask, colors, alpha=0.5)
    expected = (100 * 0.5 + np.asarray(colors[1]) * 0.5).round()
    np.testing.assert_array_equal(out[0, 1], expected)


def test_detection_side_by_side_shows_ground_truth_beside_the_prediction_at_a_readable_size():
    target = {"boxes": torch.tensor([[4.0, 4, 10, 10]]), "labels": torch.tensor([1])}
    picture = detection_side_by_side(torch.zeros(3, 48, 48), target, _detection(), ["bg", "a", "b"],
                                     min_height=192)
    # two 48 px panels enlarged x4 (whole factor, nearest), 4 px apart, under a 14 px title row
    assert picture.size == (2 * 192 + 4, 192 + 14)
    pixels = np.asarray(picture)
    truth, prediction = pixels[14:, :192], pixels[14:, 196:]
    assert truth.any() and prediction.any()
    # the prediction panel draws the confident detections, the ground truth only its one box
    assert (prediction.sum(-1) > 0).sum() > (truth.sum(-1) > 0).sum()
    alone = detection_side_by_side(torch.zeros(3, 48, 48), None, _detection(), [], min_height=48)
    assert alone.size == (48, 48 + 14)
