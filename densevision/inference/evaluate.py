"""Scores of predictions already on disk (the library side of ``densevision evaluate``).

- Segmentation: a folder of predicted class-index PNGs against a folder of label PNGs (SegNet layout,
  e.g. CamVid's ``testannot/``), matched by file name, at the labels' own resolution; the ignore index
  (void) is left out. mIoU, per-class IoU and global pixel accuracy from one confusion matrix
  (``densevision.metrics``), as ``densevision test`` reports them.
- Segmentation in memory (``score_segmentation``): networks run as prediction runs them on (image, label)
  pairs, e.g. float32 and int8 of one export on a run's validation split.
- Detection: COCO results (``predictions.json`` of ``densevision predict``) against a COCO instances json,
  with pycocotools; images matched by file name when the predictions come with their ``images.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from densevision.datasets.coco_detection import coco_from_dict, load_coco_json
from densevision.datasets.coco_eval import evaluate_coco
from densevision.datasets.segmentation import read_mask
from densevision.metrics import (
    check_label_values,
    confusion_matrix,
    iou_from_confusion,
    per_class_iou,
    segmentation_table,
)

if TYPE_CHECKING:
    from densevision.inference.preprocessing import Preprocessing

__all__ = [
    "EvaluationError",
    "LabelValueError",
    "evaluate_detection_file",
    "evaluate_segmentation_folders",
    "score_segmentation",
    "segmentation_table",
]


class EvaluationError(ValueError):
    """Predictions and ground truth that cannot be scored together (the message names the files)."""


class LabelValueError(EvaluationError):
    """A label PNG holds a value that is neither a class index nor the ignore index.

    Attributes:
        file: the label PNG.
        value: the first such value found in it.
    """

    def __init__(self, message: str, file: Path, value: int) -> None:
        super().__init__(message)
        self.file, self.value = file, value


def evaluate_segmentation_folders(
    predictions: str | Path,
    labels: str | Path,
    *,
    num_classes: int,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Score every label PNG in ``labels`` against the PNG of the same name in ``predictions``.

    Returns:
        ``{"mIoU", "pixel_accuracy", "per_class_iou": {name: IoU or None}, "images", "confusion_matrix"}``.

    Raises:
        EvaluationError: no labels, predictions missing for some labels, sizes that differ, or predicted
            values outside ``[0, num_classes)``; the message lists the files.
        LabelValueError: a label value outside ``[0, num_classes)`` that is not ``ignore_index`` (e.g.
            CamVid's void 11 without ``ignore_index=11``).
    """
    predictions, labels = Path(predictions), Path(labels)
    for folder, what in ((predictions, "predictions"), (labels, "labels")):
        if not folder.is_dir():
            raise EvaluationError(f"{what} folder {folder} does not exist")
    names = class_names or [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise EvaluationError(f"got {len(names)} class names for num_classes={num_classes}")
    label_files = sorted(p for p in labels.iterdir() if p.suffix.lower() == ".png")
    if not label_files:
        raise EvaluationError(f"no label PNGs in {labels}")
    missing = [p.name for p in label_files if not (predictions / p.name).is_file()]
    if missing:
        raise EvaluationError(
            f"{len(missing)} of {len(label_files)} labels in {labels} have no prediction of the same name in "
            f"{predictions}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    confusion = confusion_matrix(num_classes, ignore_index)
    for label_file in label_files:
        target = torch.from_numpy(read_mask(label_file))
        predicted = torch.from_numpy(read_mask(predictions / label_file.name))
        if predicted.shape != target.shape:
            raise EvaluationError(
                f"{predictions / label_file.name}: size {tuple(predicted.shape[::-1])} (W, H) differs from "
                f"its label {label_file}'s {tuple(target.shape[::-1])}; predict at the labels' resolution"
            )
        bad = (predicted < 0) | (predicted >= num_classes)
        if bad.any():
            raise EvaluationError(
                f"{predictions / label_file.name}: predicted value {int(predicted[bad][0])} is not a class "
                f"index in [0, {num_classes})"
            )
        value = check_label_values(target, num_classes, ignore_index)
        if value is not None:
            raise LabelValueError(
                f"{label_file}: label value {value} is not a class index in [0, {num_classes}) nor the "
                f"ignore index ({ignore_index}); if {value} marks unlabelled (void) pixels, set "
                f"ignore_index={value}",
                label_file,
                value,
            )
        confusion.update(predicted, target)
    matrix = confusion.compute()
    metrics = iou_from_confusion(matrix)
    return {
        "mIoU": metrics["mIoU"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "per_class_iou": per_class_iou(names, metrics["iou"]),
        "images": len(label_files),
        "ignore_index": ignore_index,
        "confusion_matrix": matrix.tolist(),
    }


def score_segmentation(
    forwards: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    preprocessing: Preprocessing,
    *,
    num_classes: int,
    ignore_index: int | None = None,
) -> dict[str, dict]:
    """Score networks as ``densevision predict`` runs them (``preprocessing``, logits resized to the
    label's size, argmax) on (image, label) pairs, every network on the same image before the next.

    Args:
        forwards: name -> ``(N, 3, h, w) -> (N, C, h, w)`` logits function (``numpy_forward(run)`` for a
            backend); the first is the reference of ``pixel_agreement``.
        pairs: ((H, W, 3) uint8 RGB image, (H, W) int label) pairs.
        preprocessing: the run's preprocessing (``densevision.json``'s, or the task's).

    Returns:
        name -> ``{"mIoU", "pixel_accuracy", "pixel_agreement", "images"}``; ``pixel_agreement`` is the
        share of all pixels whose class equals the first network's.
    """
    names = list(forwards)
    confusion = {name: confusion_matrix(num_classes, ignore_index) for name in names}
    same = dict.fromkeys(names, 0)
    pixels = images = 0
    for image, label in pairs:
        target = torch.as_tensor(label)
        masks = {name: preprocessing.predict(forward, image).argmax(0) for name, forward in forwards.items()}
        for name, mask in masks.items():
            confusion[name].update(mask, target)
            same[name] += int((mask == masks[names[0]]).sum())
        pixels += target.numel()
        images += 1
    if not images:
        raise EvaluationError("no (image, label) pairs to score")
    scores = {}
    for name in names:
        metrics = iou_from_confusion(confusion[name].compute())
        scores[name] = {"mIoU": float(metrics["mIoU"]), "pixel_accuracy": float(metrics["pixel_accuracy"]),
                        "pixel_agreement": same[name] / pixels, "images": images}  # fmt: skip
    return scores


def evaluate_detection_file(
    predictions: str | Path, ground_truth: str | Path, *, images: str | Path | None = None
) -> dict:
    """COCO AP (bbox, and segm when results carry masks) of a results json against an instances json.

    Args:
        predictions: COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``
            [, ``segmentation``]).
        ground_truth: COCO instances json.
        images: the ``images.json`` written beside the predictions (ids and file names): image ids are then
            matched to the ground truth's by file name; None = the ids are already the ground truth's.

    Raises:
        EvaluationError: a file is unreadable, or predictions name images or categories the ground truth
            lacks.
    """
    gt = load_coco_json(ground_truth)
    try:
        results = json.loads(Path(predictions).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{predictions}: not a readable COCO results json ({err})") from err
    if not isinstance(results, list):
        raise EvaluationError(f"{predictions}: expected a list of COCO results, got {type(results).__name__}")
    gt_ids = {img["id"] for img in gt["images"]}
    scored = None  # the images predicted on (all of the ground truth's when not told)
    if images is not None:
        by_name = {Path(img["file_name"]).name: img["id"] for img in gt["images"]}
        mapping = {}
        for img in json.loads(Path(images).read_text()):
            name = Path(img["file_name"]).name
            if name not in by_name:
                raise EvaluationError(f"{images}: image {img['file_name']} is not in {ground_truth}")
            mapping[img["id"]] = by_name[name]
        results = [{**r, "image_id": mapping[r["image_id"]]} for r in results if r["image_id"] in mapping]
        scored = sorted(mapping.values())
    unknown = sorted({r["image_id"] for r in results} - gt_ids)
    if unknown:
        raise EvaluationError(
            f"{predictions}: image ids {unknown[:5]} are not in {ground_truth}; pass the images.json written "
            "beside the predictions (--images) to match images by file name"
        )
    categories = {c["id"] for c in gt["categories"]}
    strange = sorted({r["category_id"] for r in results} - categories)
    if strange:
        raise EvaluationError(
            f"{predictions}: category ids {strange[:5]} are not categories of {ground_truth} "
            f"({sorted(categories)[:10]}...)"
        )
    coco = coco_from_dict(gt)
    report = {"bbox": evaluate_coco(coco, results, iou_type="bbox", image_ids=scored)}
    if results and "segmentation" in results[0]:
        report["segm"] = evaluate_coco(coco, results, iou_type="segm", image_ids=scored)
    report["images"] = len(scored) if scored is not None else len(gt_ids)
    return report
