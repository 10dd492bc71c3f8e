"""Segmentation scores from a confusion matrix: per-class IoU, mIoU, global pixel accuracy, and the printed
per-class table. Shared by the training task (``densevision fit/validate/test``) and ``densevision evaluate``
so both report the same numbers.

The matrix is accumulated with torchmetrics' ``MulticlassConfusionMatrix`` (rows = ground truth, columns =
prediction, the ignore index left out); IoU is read from it as in the CamVid / VOC benchmarks (Long et al.,
"Fully Convolutional Networks for Semantic Segmentation", CVPR 2015): ``TP / (TP + FP + FN)`` per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = [
    "check_label_values",
    "confusion_matrix",
    "iou_from_confusion",
    "per_class_iou",
    "segmentation_table",
]


def confusion_matrix(num_classes: int, ignore_index: int | None = None) -> MulticlassConfusionMatrix:
    """A (C, C) confusion-matrix metric (torchmetrics; synced across processes under DDP).

    ``update(prediction, target)`` takes integer class maps of any equal shape, e.g. (N, H, W).
    """
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)


def check_label_values(target: Tensor, num_classes: int, ignore_index: int | None = None) -> int | None:
    """The first value of ``target`` that is neither a class index in ``[0, num_classes)`` nor
    ``ignore_index`` (None when every value is one of them).

    torchmetrics refuses such values with a message that names neither the file nor the fix; callers turn
    this into one naming both.
    """
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    return int(target[bad].flatten()[0]) if bool(bad.any()) else None


def iou_from_confusion(confusion: Tensor) -> dict[str, Any]:
    """mIoU, per-class IoU and global pixel accuracy from a (C, C) confusion matrix (rows = truth).

    A class absent from both truth and prediction has IoU NaN and is left out of the mean (as in the
    CamVid / VOC benchmarks).

    Returns:
        ``{"mIoU": float, "pixel_accuracy": float, "iou": list[float]}`` (NaN where undefined).
    """
    confusion = confusion.double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, float("nan")))
    total = confusion.sum()
    return {
        "mIoU": float(iou.nanmean()) if (union > 0).any() else float("nan"),
        "pixel_accuracy": float(hits.sum() / total) if total > 0 else float("nan"),
        "iou": [float(v) for v in iou],
    }


def per_class_iou(class_names: Sequence[str], iou: Sequence[float]) -> dict[str, float | None]:
    """``{name: IoU}`` with None for an undefined (NaN) IoU, so the dict is valid JSON."""
    return {name: (None if math.isnan(v) else v) for name, v in zip(class_names, iou, strict=True)}


def segmentation_table(report: dict) -> str:
    """A report (``per_class_iou``, ``confusion_matrix``, ``mIoU``, ``pixel_accuracy``) as a printed table:
    one line per class (IoU; its share of the labelled pixels; recall, the share of its pixels predicted
    right; the class its pixels are most often mistaken for, with that share), then mIoU and global
    accuracy. Rows of ``confusion_matrix`` are ground truth."""
    names = list(report["per_class_iou"])
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    total = max(matrix.sum(), 1.0)
    lines = [f"{'class':<16} {'IoU':>6} {'pixels':>7} {'recall':>7}  most often called"]
    for i, name in enumerate(names):
        iou, row = report["per_class_iou"][name], matrix[i]
        count = row.sum()
        iou_text = "   n/a" if iou is None else f"{iou:6.3f}"
        if count == 0:
            lines.append(f"{name:<16} {iou_text} {0.0:6.1%} {'n/a':>7}")
            continue
        wrong = row.copy()
        wrong[i] = 0
        confused = int(wrong.argmax())
        called = f"{names[confused]} ({wrong[confused] / count:.1%})" if wrong[confused] > 0 else "-"
        lines.append(f"{name:<16} {iou_text} {count / total:6.1%} {row[i] / count:6.1%}  {called}")
    lines.append(f"{'mIoU':<16} {report['mIoU']:6.3f}")
    lines.append(f"{'global accuracy':<16} {report['pixel_accuracy']:6.3f}")
    return "\n".join(lines)
