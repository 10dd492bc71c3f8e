"""COCO evaluation against hand-made cases with known AP, and detector output -> COCO results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from densevision.datasets.coco_detection import coco_from_dict
from densevision.datasets.coco_eval import detections_to_coco, evaluate_coco

# Two images 100x100, one category (id 7). Image 1: two objects; image 2: one object and a crowd region.
GT_BOXES = {1: [[10, 10, 40, 40], [60, 55, 35, 40]], 2: [[20, 30, 50, 45]]}
CROWD_BOX = [0, 80, 100, 20]


def _rle(box: list[float]) -> dict:
    mask = np.zeros((100, 100), np.uint8)
    x, y, w, h = (int(v) for v in box)
    mask[y: y + h, x: x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _ground_truth():
    anns = [{"id": 10 * i + k, "image_id": i, "category_id": 7, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0, "segmentation": _rle(box)}
            for i, boxes in GT_BOXES.items() for k, box in enumerate(boxes)]
    anns.append({"id": 99, "image_id": 2, "category_id": 7, "bbox": CROWD_BOX, "area": 2000, "iscrowd": 1,
                 "segmentation": _rle(CROWD_BOX)})
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in GT_BOXES]
    return coco_from_dict({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "x"}]})


def _result(image_id: int, box: list[float], score: float, masks: bool = False) -> dict:
    result = {"image_id": image_id, "category_id": 7, "bbox": box, "score": score}
    if masks:
        result["segmentation"] = _rle(box)
    return result


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_predictions_give_ap_one(iou_type):
    results = [_result(i, box, 0.9, masks=True) for i, boxes in GT_BOXES.items() for box in boxes]
    metrics = evaluate_coco(_ground_truth(), results, iou_type=iou_type)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert metrics["APl"] == -1.0  # no large (> 96^2 px) ground truth: pycocotools reports -1


def test_one_false_positive_at_a_known_score():
    # ranked: TP (0.9), FP (0.8), TP (0.7), TP (0.6). precision/recall after each: 1/(1/3), 1/2 (1/3),
    # 2/3 (2/3), 3/4 (1). Interpolated precision (max to the right): 1 for recall <= 1/3, 3/4 above.
    # COCO samples recall at 0, 0.01, ..., 1: 34 points <= 1/3 and 67 above -> (34 + 67 * 0.75) / 101.
    results = [_result(1, GT_BOXES[1][0], 0.9), _result(1, [70, 5, 20, 20], 0.8),
               _result(1, GT_BOXES[1][1], 0.7), _result(2, GT_BOXES[2][0], 0.6)]
    expected = (34 + 67 * 0.75) / 101
    metrics = evaluate_coco(_ground_truth(), results)
    assert metrics["AP50"] == pytest.approx(expected, abs=1e-6)
    assert metrics["AP"] == pytest.approx(expected, abs=1e-6)  # exact boxes: the same at every IoU


def test_detection_on_a_crowd_region_is_not_a_false_positive():
    results = [_result(i, box, 0.9) for i, boxes in GT_BOXES.items() for box in boxes]
    results.append(_result(2, [10, 82, 30, 15], 0.95))  # inside the crowd box, highest score
    assert evaluate_coco(_ground_truth(), results)["AP50"] == pytest.approx(1.0)


def test_no_detections_and_image_subsets():
    coco = _ground_truth()
    assert evaluate_coco(coco, [])["AP"] == 0.0
    only_image_2 = [_result(2, GT_BOXES[2][0], 0.9)]
    assert evaluate_coco(coco, only_image_2, image_ids=[2])["AP"] == pytest.approx(1.0)
    assert evaluate_coco(coco, only_image_2)["AP"] < 0.5  # image 1's objects count as missed
    with pytest.raises(ValueError, match="iou_type must be 'bbox' or 'segm', got 'keypoints'"):
        evaluate_coco(coco, only_image_2, iou_type="keypoints")


def test_detections_map_back_through_the_letterbox():
    # a 100x200 (H, W) image letterboxed to 64x64 is scaled by 0.32 and padded at the bottom
    masks = torch.zeros(1, 1, 64, 64)
    masks[0, 0, 8:16, 16:32] = 1
    detection = {"boxes": torch.tensor([[16.0, 8.0, 32.0, 16.0]]), "labels": torch.tensor([2]),
                 "scores": torch.tensor([0.75]), "masks": masks}
    (result,) = detections_to_coco(detection, image_id=5, input_size=(64, 64), orig_size=(100, 200),
                                   label_to_category_id=[0, 3, 11])
    assert result["image_id"] == 5 and result["category_id"] == 11 and result["score"] == 0.75
    assert result["bbox"] == pytest.approx([50, 25, 50, 25])
    mask = mask_utils.decode(result["segmentation"])
    assert mask.shape == (100, 200)
    assert mask_utils.toBbox(result["segmentation"]).tolist() == pytest.approx([50, 25, 50, 25], abs=2)
