"""``densevision evaluate``: predictions on disk scored against labels (segmentation PNGs, COCO json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densevision.apps.evaluate import main
from densevision.datasets.shapes_detection import ensure_shapes_detection_dataset
from densevision.inference.evaluate import (
    EvaluationError,
    evaluate_detection_file,
    evaluate_segmentation_folders,
    score_segmentation,
    segmentation_table,
)
from densevision.inference.preprocessing import Preprocessing


def write_masks(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        Image.fromarray(mask.astype(np.uint8)).save(folder / name)
    return folder


def test_networks_scored_in_memory_as_prediction_runs_them():
    import torch

    # the same 2x3 label and wrong prediction as the hand-computed test below
    label = np.array([[0, 0, 1], [1, 9, 9]])
    image = np.zeros((2, 3, 3), np.uint8)
    wanted = torch.tensor([[0, 0, 0], [1, 1, 0]])

    def right(x):  # the wanted classes as logits, at the preprocessed size (2, 3)
        logits = torch.nn.functional.one_hot(wanted, 2).permute(2, 0, 1)[None].float()
        return logits.expand(len(x), -1, -1, -1)

    def all_zero(x):
        return torch.stack([torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 0])], 1)

    pairs = [(image, label), (image, label)]
    networks = {"a": right, "b": all_zero}
    scores = score_segmentation(networks, pairs, Preprocessing(), num_classes=2, ignore_index=9)
    assert scores["a"] == pytest.approx({"mIoU": (2 / 3 + 1 / 2) / 2, "pixel_accuracy": 3 / 4,
                                         "pixel_agreement": 1.0, "images": 2})  # fmt: skip
    # all 0: class 0 IoU 2/4, class 1 IoU 0; agrees with "a" on the 4 pixels where a says 0 of 6
    assert scores["b"] == pytest.approx({"mIoU": 1 / 4, "pixel_accuracy": 2 / 4, "pixel_agreement": 4 / 6,
                                         "images": 2})  # fmt: skip
    with pytest.raises(EvaluationError, match="no .image, label. pairs"):
        score_segmentation({"a": right}, [], Preprocessing(), num_classes=2)


def test_segmentation_scores_match_hand_computed_values(tmp_path):
    # 2x3 labels: classes 0, 1 and void 9; one prediction wrong (a 1 predicted as 0)
    label = np.array([[0, 0, 1], [1, 9, 9]])
    pred = np.array([[0, 0, 0], [1, 1, 0]])  # predictions on void pixels do not count
    gt = write_masks(tmp_path / "gt", {"a.png": label})
    pr = write_masks(tmp_path / "pr", {"a.png": pred})
    report = evaluate_segmentation_folders(pr, gt, num_classes=2, ignore_index=9, class_names=["x", "y"])
    # class 0: tp 2, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 0, fn 1 -> 1/2; accuracy 3/4
    assert report["per_class_iou"] == pytest.approx({"x": 2 / 3, "y": 1 / 2})
    assert report["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert report["pixel_accuracy"] == pytest.approx(3 / 4)


def test_table_names_each_class_share_recall_and_main_confusion(tmp_path):
    # road (0): 6 pixels, 2 called pavement (1); pavement: 2 pixels, all right; car (2): never labelled
    label = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    pred = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    gt = write_masks(tmp_path / "gt", {"a.png": label})
    pr = write_masks(tmp_path / "pr", {"a.png": pred})
    names = ["road", "pavement", "car"]
    report = evaluate_segmentation_folders(pr, gt, num_classes=3, class_names=names)
    rows = {line.split()[0]: line for line in segmentation_table(report).splitlines()}
    assert rows["road"].split()[1:] == ["0.667", "75.0%", "66.7%", "pavement", "(33.3%)"]
    assert rows["pavement"].split()[1:] == ["0.500", "25.0%", "100.0%", "-"]
    assert rows["car"].split()[1:] == ["n/a", "0.0%", "n/a"]
    assert rows["mIoU"].split()[-1] == f"{(2 / 3 + 1 / 2) / 2:.3f}"


def test_perfect_predictions_score_one(tmp_path):
    rng = np.random.default_rng(0)
    masks = {f"{i}.png": rng.integers(0, 3, (8, 10)) for i in range(3)}
    gt = write_masks(tmp_path / "gt", masks)
    report = evaluate_segmentation_folders(gt, gt, num_classes=3)
    assert report["mIoU"] == 1 and report["pixel_accuracy"] == 1 and report["images"] == 3


def test_missing_and_mis_sized_predictions_name_the_files(tmp_path):
    gt = write_masks(tmp_path / "gt", {"a.png": np.zeros((4, 4)), "b.png": np.zeros((4, 4))})
    pr = write_masks(tmp_path / "pr", {"a.png": np.zeros((4, 4))})
    with pytest.raises(EvaluationError, match=r"1 of 2 labels .* b\.png"):
        evaluate_segmentation_folders(pr, gt, num_classes=2)
    write_masks(pr, {"b.png": np.zeros((2, 4))})
    with pytest.raises(EvaluationError, match=r"b\.png: size \(4, 2\) \(W, H\) differs"):
        evaluate_segmentation_folders(pr, gt, num_classes=2)
    write_masks(pr, {"b.png": np.full((4, 4), 7)})
    with pytest.raises(EvaluationError, match="predicted value 7 is not a class index"):
        evaluate_segmentation_folders(pr, gt, num_classes=2)


def test_command_prints_table_and_writes_json(tmp_path, capsys):
    label = np.array([[0, 1], [2, 11]])
    gt = write_masks(tmp_path / "gt", {"a.png": label})
    pr = write_masks(tmp_path / "out" / "masks", {"a.png": np.array([[0, 1], [2, 3]])})
    assert main(["segmentation", "--pred", str(pr), "--gt", str(gt), "--dataset", "camvid"]) == 0
    out = capsys.readouterr().out
    assert "sky" in out and "mIoU" in out and "1.000" in out
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["ignore_index"] == 11 and report["per_class_iou"]["sky"] == 1.0


def test_detection_ground_truth_as_predictions_scores_ap_one(tmp_path):
    root = ensure_shapes_detection_dataset(tmp_path / "shapes", num_train=2, num_val=3, image_size=64)
    gt_file = root / "annotations" / "val.json"
    gt = json.loads(gt_file.read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]  # fmt: skip
    pred = tmp_path / "predictions.json"
    pred.write_text(json.dumps(results))
    assert evaluate_detection_file(pred, gt_file)["bbox"]["AP50"] == pytest.approx(1.0)

    # predict writes its own image ids with images.json; evaluate matches them by file name
    renumber = {img["id"]: 100 + i for i, img in enumerate(gt["images"])}
    pred.write_text(json.dumps([{**r, "image_id": renumber[r["image_id"]]} for r in results]))
    with pytest.raises(EvaluationError, match="are not in .*pass the images.json"):
        evaluate_detection_file(pred, gt_file)
    images = tmp_path / "images.json"
    images.write_text(json.dumps([{**img, "id": renumber[img["id"]]} for img in gt["images"]]))
    assert evaluate_detection_file(pred, gt_file, images=images)["bbox"]["AP50"] == pytest.approx(1.0)
    pred.write_text(json.dumps([{**results[0], "category_id": 77}]))
    with pytest.raises(EvaluationError, match=r"category ids \[77\]"):
        evaluate_detection_file(pred, gt_file)
