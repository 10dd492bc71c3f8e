"""COCO-format object detection / instance segmentation datasets read through pycocotools.

Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014. Any dataset written as images + a COCO
instances json works (COCO itself, the embedded generated dataset, converted YOLO or mask datasets).

Conventions, as torchvision's detectors expect them:
- sparse category ids are mapped to contiguous labels ``1..K`` (``0`` = background) in sorted id order;
  ``label_to_category_id`` maps them back for results files.
- boxes are ``xyxy`` float pixels, masks ``uint8 (N, H, W)``.
- ``iscrowd=1`` annotations are left out of training targets but stay in ``coco`` (the ground truth
  pycocotools evaluates against), where COCOeval treats them as "ignore" regions.

Bad annotations never crash an epoch: they are checked once when the dataset is built, then clipped,
dropped or skipped and counted; ``report`` holds the counts and one warning summarises them. Files that
cannot be used at all (malformed json, a missing field) raise an error naming the file, field and value.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from densevision.datasets.image_io import (
    ImageFileError,
    check_image_file,
    path_within,
    read_rgb_image,
    reseed_from_torch,
    unseeded,
)

# sample = (image (3, H, W) float in [0, 1], target dict); a transform maps numpy arrays (see transforms).
DetectionSample = tuple[Tensor, dict[str, Tensor]]
DetectionTransform = Callable[..., dict]

_REQUIRED_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


class CocoFormatError(ValueError):
    """A COCO json file that cannot be used: malformed, or a required field is missing or invalid."""


def load_coco_json(ann_file: str | Path) -> dict:
    """Read and check a COCO instances json; fill ``iscrowd`` (0) and ``area`` (box area) where missing.

    Raises:
        FileNotFoundError: ``ann_file`` does not exist.
        CocoFormatError: malformed json, or a list/field pycocotools needs is missing or has a bad value.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        data = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise CocoFormatError(f"{ann_file}: malformed json ({err})") from err
    if not isinstance(data, dict):
        raise CocoFormatError(f"{ann_file}: expected a json object with 'images', 'annotations', "
                              f"'categories', got {type(data).__name__}")
    for key, fields in _REQUIRED_FIELDS.items():
        entries = data.get(key)
        if not isinstance(entries, list):
            raise CocoFormatError(f"{ann_file}: field {key!r} must be a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise CocoFormatError(
                    f"{ann_file}: {key}[{index}] lacks field(s) {missing} (has {entry!r:.120})")
    for index, ann in enumerate(data["annotations"]):
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise CocoFormatError(f"{ann_file}: annotations[{index}] (id {ann['id']}) field 'bbox' must be "
                                  f"[x, y, width, height] numbers, got {bbox!r}")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))
    ids = [c["id"] for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise CocoFormatError(f"{ann_file}: duplicate category ids in 'categories': {sorted(ids)}")
    return data


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over an in-memory dataset dict (without its progress prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _clean_annotations(data: dict, root: Path, report: Counter, ann_file: Path) -> dict:
    """Drop annotations of unknown categories / images and degenerate or NaN boxes; clip boxes that leave
    the image; drop images whose file is missing or unreadable. Counts go into ``report``.

    Raises:
        CocoFormatError: an image ``file_name`` resolves outside ``root`` (``..``, absolute, symlink).
    """
    images = {}
    for image in data["images"]:
        try:
            path = path_within(root, image["file_name"])
        except ImageFileError as err:
            raise CocoFormatError(f"{ann_file}: image id {image['id']} file_name {image['file_name']!r}: "
                                  f"{err}") from err
        if not path.is_file():
            report["missing_image_files"] += 1
            continue
        try:
            check_image_file(path)
        except ImageFileError as err:
            report["unreadable_image_files"] += 1
            warnings.warn(str(err), stacklevel=3)
            continue
        images[image["id"]] = image
    category_ids = {c["id"] for c in data["categories"]}
    annotations = []
    for ann in data["annotations"]:
        image = images.get(ann["image_id"])
        if ann["category_id"] not in category_ids:
            report["unknown_category_ids"] += 1
            continue
        if image is None:
            report["annotations_of_missing_images"] += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            report["degenerate_boxes_dropped"] += 1
            continue
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(image["width"])), min(y + h, float(image["height"]))
        if x2 - x1 < 1 or y2 - y1 < 1:
            report["degenerate_boxes_dropped"] += 1
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            report["boxes_clipped"] += 1
            ann = {**ann, "bbox": [x1, y1, x2 - x1, y2 - y1]}
        annotations.append(ann)
    return {**data, "images": list(images.values()), "annotations": annotations}


class CocoDetection(Dataset):
    """Images + COCO instances json as torchvision detection samples.

    Args:
        root: folder the images' ``file_name`` are relative to.
        ann_file: COCO instances json.
        transforms: albumentations-style callable ``(image=, bboxes=, labels=, ann_index=[, masks=]) -> dict``
            with ``pascal_voc`` boxes (see ``densevision.datasets.detection_transforms``); None = as read.
        with_masks: also return instance masks (for Mask R-CNN); annotations need ``segmentation``.
        image_ids: use only these image ids (a split); default all images.

    Each sample is ``(image, target)``: image ``(3, H, W)`` float in [0, 1]; target ``boxes (N, 4)`` xyxy
    float32, ``labels (N,)`` int64 in 1..K, ``image_id`` int64, ``orig_size (2,)`` = (H, W) as read and,
    with masks, ``masks (N, H, W)`` uint8.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        *,
        transforms: DetectionTransform | None = None,
        with_masks: bool = False,
        image_ids: Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self._reseed = unseeded(transforms)
        self.with_masks = with_masks
        raw = load_coco_json(self.ann_file)
        self.report: Counter = Counter()
        self.coco = coco_from_dict(_clean_annotations(raw, self.root, self.report, self.ann_file))
        categories = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.label_to_category_id = [0] + [c["id"] for c in categories]
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        del self.category_id_to_label[0]
        self.class_names = ["__background__"] + [c["name"] for c in categories]
        known = set(self.coco.getImgIds())
        if image_ids is None:
            self.ids = sorted(known)
        else:
            self.ids = [i for i in image_ids if i in known]
            if len(self.ids) < len(image_ids):
                self.report["split_ids_without_image"] += len(image_ids) - len(self.ids)
        if with_masks:
            self._check_segmentations()
        if self.report:
            summary = ", ".join(f"{key}={value}" for key, value in sorted(self.report.items()))
            warnings.warn(f"{self.ann_file}: skipped or fixed bad input ({summary})", stacklevel=2)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (``K + 1``), as torchvision detectors count them."""
        return len(self.class_names)

    def _check_segmentations(self) -> None:
        for image_id in self.ids:
            for ann in self.coco.imgToAnns[image_id]:
                if not ann.get("segmentation"):
                    raise CocoFormatError(
                        f"{self.ann_file}: annotation id {ann['id']} has no 'segmentation', needed for "
                        "instance masks (with_masks=True); use with_masks=False for box-only data")

    def __len__(self) -> int:
        return len(self.ids)

    def annotations(self, image_id: int) -> list[dict]:
        """The training annotations of an image: its non-crowd ones."""
        return [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]

    def __getitem__(self, index: int) -> DetectionSample:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        # checked when built; a file that changed since (or a truncated JPEG, which verify() cannot
        # see) raises ImageFileError naming it
        image = read_rgb_image(self.root / info["file_name"])
        anns = self.annotations(image_id)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        # boxes were clipped to the json's width/height; the file's actual size is what counts here
        height, width = image.shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, anns = boxes[keep], [a for a, k in zip(anns, keep, strict=True) if k]
        labels = np.array([self.category_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        masks = [self._ann_to_mask(a, height, width) for a in anns] if self.with_masks else None
        if self.transforms is not None:
            image, boxes, labels, masks = self._apply_transforms(image, boxes, labels, masks)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }
        if masks is not None:
            out_h, out_w = image.shape[:2]
            target["masks"] = torch.as_tensor(np.stack(masks) if masks else np.zeros((0, out_h, out_w)),
                                              dtype=torch.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
        return tensor, target

    def _ann_to_mask(self, ann: dict, height: int, width: int) -> np.ndarray:
        info = self.coco.imgs[ann["image_id"]]
        if (info["height"], info["width"]) == (height, width):
            return self.coco.annToMask(ann)
        # the json's size disagrees with the file: rasterise at the json size, then fit to the file
        mask = Image.fromarray(self.coco.annToMask(ann)).resize((width, height), Image.NEAREST)
        return np.asarray(mask)

    def _apply_transforms(self, image, boxes, labels, masks):
        if self._reseed:
            reseed_from_torch(self.transforms)
        kwargs = {"image": image, "bboxes": boxes, "labels": labels, "ann_index": np.arange(len(labels))}
        if masks is not None:
            kwargs["masks"] = masks
        out = self.transforms(**kwargs)
        # boxes dropped by cropping / min_visibility take their label and mask with them via ann_index
        index = np.asarray(out["ann_index"], dtype=np.int64)
        new_masks = None
        if masks is not None:
            new_masks = [np.asarray(out["masks"][i]) for i in index]
        return out["image"], np.asarray(out["bboxes"], dtype=np.float32), labels[index], new_masks


def detection_collate(batch: Sequence[DetectionSample]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Batch as torchvision detectors take it: a list of images (sizes may differ) and a list of targets."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def split_image_ids(ann_file: str | Path, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random (train, val) split of the image ids of a COCO json."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = sorted(image["id"] for image in load_coco_json(ann_file)["images"])
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * len(ids)))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def subset_coco(coco: COCO, image_ids: Sequence[int]) -> COCO:
    """A ``COCO`` index holding only ``image_ids`` and their annotations (ground truth of a split)."""
    keep = set(image_ids)
    data = copy.copy(coco.dataset)
    data["images"] = [i for i in coco.dataset["images"] if i["id"] in keep]
    data["annotations"] = [a for a in coco.dataset["annotations"] if a["image_id"] in keep]
    return coco_from_dict(data)
