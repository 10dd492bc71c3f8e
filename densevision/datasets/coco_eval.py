"""COCO detection results and their evaluation with pycocotools' ``COCOeval``.

A result is COCO's results-file entry: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` plus
``"segmentation"`` (compressed RLE) for instance masks, in the original image's pixels.

Next to COCO's AP, ``AP50_VOC`` is PASCAL VOC's mAP@0.5 taken from the same matching: per class the area
under the precision envelope at every recall step (the VOC 2010-2012 devkit's rule, not VOC 2007's 11
recall points; :func:`voc_average_precision` has both), averaged over the classes with ground truth.
Ground truth marked ``iscrowd`` (VOC's "difficult" boxes, as ``voc_xml_to_coco`` writes them) counts
neither as a miss nor, where a detection matches it, as a false positive, as the VOC devkit does.
One difference stays: COCOeval matches a detection to a crowd box by the share of the detection inside
it, the devkit by IoU, so a few more detections near difficult boxes are ignored here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

# the first six numbers of COCOeval.stats, in order
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VOC_METRIC = "AP50_VOC"


def detections_to_coco(
    detection: dict[str, Tensor],
    *,
    image_id: int,
    input_size: tuple[int, int],
    orig_size: tuple[int, int],
    label_to_category_id: Sequence[int],
    mask_threshold: float = 0.5,
) -> list[dict]:
    """One image's detector output as COCO results in the original image's pixels.

    Args:
        detection: torchvision detector output: ``boxes (N, 4)`` xyxy, ``labels (N,)``, ``scores (N,)`` and
            optionally ``masks (N, 1, H, W)`` probabilities, all in ``input_size`` pixels.
        image_id: COCO image id.
        input_size: (H, W) of the image given to the detector.
        orig_size: (H, W) of the image as read. The input must be the original scaled by one factor and
            padded at the bottom/right (``detection_eval_transforms``), so one factor maps back.
        label_to_category_id: contiguous label -> COCO category id.
        mask_threshold: probability above which a mask pixel belongs to the object.
    """
    # RetinaNet / FCOS score every class slot, the background slot 0 too: it is no category
    keep = detection["labels"] > 0
    detection = {k: v[keep] for k, v in detection.items()}
    scale = min(input_size[0] / orig_size[0], input_size[1] / orig_size[1])
    boxes = detection["boxes"].detach().float().cpu() / scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig_size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig_size[0])
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    labels = detection["labels"].tolist()
    scores = detection["scores"].tolist()
    results = [
        {"image_id": int(image_id), "category_id": int(label_to_category_id[label]),
         "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)}
        for box, label, score in zip(xywh, labels, scores, strict=True)
    ]
    if "masks" in detection and len(results):
        rles = _masks_to_rle(detection["masks"], scale, orig_size, mask_threshold)
        for result, rle in zip(results, rles, strict=True):
            result["segmentation"] = rle
    return results


def _masks_to_rle(masks: Tensor, scale: float, orig_size: tuple[int, int], threshold: float) -> list[dict]:
    height, width = orig_size
    # undo the letterbox: crop the padding, then resize to the original size
    valid = masks[:, :, : round(height * scale), : round(width * scale)].detach().float().cpu()
    binary = (F.interpolate(valid, size=(height, width), mode="bilinear", align_corners=False) > threshold)
    array = np.asfortranarray(binary[:, 0].numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def evaluate_coco(
    coco_gt: COCO,
    results: list[dict],
    *,
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl of ``results`` against ``coco_gt`` (pycocotools ``COCOeval``).

    Args:
        coco_gt: ground truth (crowd annotations included: COCOeval ignores detections matching them).
        results: COCO results entries (see module docstring); empty = nothing detected = AP 0.
        iou_type: ``"bbox"`` or ``"segm"``.
        image_ids: evaluate on these images only (e.g. those of a partial validation run); default all.

    Returns:
        metric name -> value (``METRIC_NAMES`` and ``AP50_VOC``, see the module docstring); pycocotools'
        -1 (no ground truth in an area range) is kept as -1.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    ids = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
    if not results:
        return dict.fromkeys((*METRIC_NAMES, VOC_METRIC), 0.0)
    # loadRes adds keys to the dicts it gets: give it copies. Without "bbox", it derives boxes and areas
    # from the masks, as the segm evaluation needs.
    dropped = "bbox" if iou_type == "segm" else None
    results = [{k: v for k, v in r.items() if k != dropped} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[: len(METRIC_NAMES)]
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, stats, strict=True)}
    metrics[VOC_METRIC] = voc_average_precision(evaluator)
    return metrics


def voc_average_precision(evaluator: COCOeval, *, voc07: bool = False) -> float:
    """PASCAL VOC mAP at IoU 0.5 from an evaluated ``COCOeval`` (``evaluate()`` run; its first IoU
    threshold 0.5, area range "all", up to ``maxDets[-1]`` detections per image).

    Args:
        evaluator: the evaluated ``COCOeval``; its public ``evalImgs`` hold each image's matches.
        voc07: VOC 2007's rule (mean of the interpolated precision at recall 0, 0.1, ..., 1) instead of
            the 2010-2012 area under the precision envelope.

    Returns:
        the mean over the classes with at least one non-ignored ground truth box; -1 if there are none.
    """
    params = evaluator.params
    if not np.isclose(params.iouThrs[0], 0.5):
        raise ValueError(f"VOC AP needs IoU threshold 0.5 first, got {params.iouThrs[0]}")
    images, areas = len(params.imgIds), len(params.areaRng)
    per_class = []
    for k in range(len(params.catIds)):
        # evalImgs is ordered category, area range, image; area range 0 is "all"
        entries = [e for e in evaluator.evalImgs[k * areas * images : k * areas * images + images] if e]
        positives = sum(int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)) for e in entries)
        if positives == 0:
            continue
        scores = np.concatenate([np.asarray(e["dtScores"], dtype=float) for e in entries] or [np.zeros(0)])
        matched = np.concatenate([e["dtMatches"][0] > 0 for e in entries] or [np.zeros(0, bool)])
        ignored = np.concatenate([e["dtIgnore"][0].astype(bool) for e in entries] or [np.zeros(0, bool)])
        order = np.argsort(-scores, kind="mergesort")
        matched, ignored = matched[order], ignored[order]
        tp = np.cumsum(matched & ~ignored)
        fp = np.cumsum(~matched & ~ignored)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
        per_class.append(_voc_ap(recall, precision, voc07))
    return float(np.mean(per_class)) if per_class else -1.0


def _voc_ap(recall: np.ndarray, precision: np.ndarray, voc07: bool) -> float:
    if voc07:
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]))
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))
