"""``densevision.metrics``: the scores shared by training and ``densevision evaluate``; the evaluate command's
one-line error for labels holding a void value it was not told about."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.cli import main
from densevision.inference import evaluate as evaluate_module
from densevision.inference.evaluate import LabelValueError, evaluate_segmentation_folders
from densevision.metrics import (
    check_label_values,
    confusion_matrix,
    iou_from_confusion,
    per_class_iou,
    segmentation_table,
)
from densevision.tasks import segmentation as task_module

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_iou_and_accuracy_from_a_torchmetrics_confusion_matrix():
    metric = confusion_matrix(3, ignore_index=9)
    metric.update(torch.tensor([0, 0, 1, 1, 2, 0]), torch.tensor([0, 1, 1, 2, 2, 9]))
    matrix = metric.compute()
    assert matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]  # the void pixel counts nowhere
    scores = iou_from_confusion(matrix)
    # class 0: tp 1, fp 1, fn 0 -> 1/2; class 1: tp 1, fp 1, fn 1 -> 1/3; class 2: tp 1, fn 1 -> 1/2
    assert scores["iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert scores["mIoU"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def test_a_class_never_seen_is_nan_left_out_of_the_mean_and_none_in_json():
    scores = iou_from_confusion(torch.tensor([[2, 0, 0], [0, 2, 0], [0, 0, 0]]))
    assert scores["mIoU"] == 1.0 and np.isnan(scores["iou"][2])
    assert per_class_iou(["a", "b", "c"], scores["iou"]) == {"a": 1.0, "b": 1.0, "c": None}


def test_table_lists_every_class_then_the_means():
    report = {"per_class_iou": {"a": 0.5, "b": None}, "confusion_matrix": [[1, 1], [0, 0]],
              "mIoU": 0.5, "pixel_accuracy": 0.5}  # fmt: skip
    lines = segmentation_table(report).splitlines()
    assert [line.split()[0] for line in lines] == ["class", "a", "b", "mIoU", "global"]
    assert lines[1].split()[1:] == ["0.500", "100.0%", "50.0%", "b", "(50.0%)"]


def test_label_values_outside_the_classes_are_found_unless_ignored():
    target = torch.tensor([[0, 1], [11, 2]])
    assert check_label_values(target, 11) == 11
    assert check_label_values(target, 11, ignore_index=11) is None
    assert check_label_values(torch.tensor([-1, 0]), 2) == -1


def test_task_and_evaluate_share_one_implementation():
    assert task_module.iou_from_confusion is iou_from_confusion  # the old import path keeps working
    assert evaluate_module.segmentation_table is segmentation_table


def _camvid_like_folders(tmp_path: Path) -> tuple[Path, Path]:
    label = np.array([[0, 1, 11], [2, 11, 10]], dtype=np.uint8)  # 11: CamVid's void
    for folder, mask in (("gt", label), ("out/masks", np.minimum(label, 10))):
        (tmp_path / folder).mkdir(parents=True)
        Image.fromarray(mask).save(tmp_path / folder / "0001TP_006690.png")
    return tmp_path / "out" / "masks", tmp_path / "gt"


def test_library_names_the_file_and_the_value(tmp_path):
    pred, gt = _camvid_like_folders(tmp_path)
    with pytest.raises(LabelValueError, match=r"0001TP_006690\.png: label value 11 .*ignore_index=11") as err:
        evaluate_segmentation_folders(pred, gt, num_classes=11)
    assert err.value.value == 11 and err.value.file == gt / "0001TP_006690.png"


@pytest.mark.slow
def test_command_without_ignore_index_gives_one_line_with_the_fix(tmp_path):
    pred, gt = _camvid_like_folders(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("DENSEVISION_DEBUG", None)
    command = [sys.executable, "-m", "densevision", "evaluate", "segmentation", "--pred", str(pred),
               "--gt", str(gt), "--num-classes", "11"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "torchmetrics" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "label value" in line]
    assert len(errors) == 1, done.stderr
    assert str(gt / "0001TP_006690.png") in errors[0]
    assert "label value 11 is not a class index in [0, 11)" in errors[0]
    assert "add --ignore-index 11 (or --dataset camvid)" in errors[0]
    assert not (tmp_path / "out" / "evaluation.json").exists()  # nothing written by a refused command

    # the fix it names works (in this process: the exit code and stderr of a refusal were the point above)
    assert main([*command[3:], "--ignore-index", "11"]) == 0
    assert (tmp_path / "out" / "evaluation.json").is_file()
