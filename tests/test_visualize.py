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


def _detection(scale: int = 1) -> dict[str, torch.Tensor]:
    """Three detections on a (48 * scale) square image; the second one below a 0.5 score threshold."""
    masks = torch.zeros(3, 1, 48 * scale, 48 * scale)
    masks[0, 0, 4 * scale : 10 * scale, 4 * scale : 10 * scale] = 1
    boxes = torch.tensor([[4.0, 4, 10, 10], [20, 20, 30, 30], [12, 36, 18, 44]]) * scale
    return {"boxes": boxes, "labels": torch.tensor([1, 2, 7]), "scores": torch.tensor([0.9, 0.1, 0.8]),
            "masks": masks}


def test_draw_detections_draws_only_confident_boxes_and_masks():
    # 192 px: captions are at least 10 px high, so a 48 px image would be mostly captions
    picture = draw_detections(torch.zeros(3, 192, 192), _detection(4), ["bg", "a", "b"], score_threshold=0.5)
    assert picture.dtype == torch.uint8 and picture.shape == (3, 192, 192)
    assert picture[:, 24, 24].any()  # the mask is filled
    assert not picture[:, 84:120, 119].any()  # the low-score box is not drawn
    # label 7 has no name: it is still drawn (captioned by its number), in its class colour
    assert tuple(picture[:, 175, 60].tolist()) == DETECTION_COLORS[7]  # its bottom edge


def test_draw_detections_keeps_a_uint8_image_and_returns_it_when_nothing_is_confident():
    image = torch.randint(0, 255, (3, 192, 192), dtype=torch.uint8)
    detection = {k: v[1:2] for k, v in _detection(4).items()}
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
