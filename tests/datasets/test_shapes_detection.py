"""The embedded shapes detection dataset: deterministic, COCO-readable, varied."""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from densevision.datasets.coco_detection import CocoDetection
from densevision.datasets.shapes_detection import CATEGORY_IDS, ensure_shapes_detection_dataset

SMALL = {"num_train": 24, "num_val": 6, "image_size": 64, "max_objects": 5}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = ensure_shapes_detection_dataset(tmp_path / "a", seed=3, **SMALL)
    b = ensure_shapes_detection_dataset(tmp_path / "b", seed=3, **SMALL)
    c = ensure_shapes_detection_dataset(tmp_path / "c", seed=4, **SMALL)
    for name in ("annotations/train.json", "annotations/val.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "images/train/000001.png").read_bytes() == (b / "images/train/000001.png").read_bytes()
    assert (a / "annotations/train.json").read_bytes() != (c / "annotations/train.json").read_bytes()


def test_existing_dataset_is_reused_and_changed_arguments_regenerate(tmp_path):
    root = ensure_shapes_detection_dataset(tmp_path, **SMALL)
    image = root / "images/train/000001.png"
    image.write_bytes(b"marker")
    ensure_shapes_detection_dataset(tmp_path, **SMALL)
    assert image.read_bytes() == b"marker"
    ensure_shapes_detection_dataset(tmp_path, **{**SMALL, "num_val": 7})
    assert image.read_bytes() != b"marker"
    assert len(json.loads((root / "annotations/val.json").read_text())["images"]) == 7


def test_content_varied_and_masks_match_boxes(tmp_path):
    root = ensure_shapes_detection_dataset(tmp_path, seed=0, num_train=40, num_val=4, image_size=96)
    data = json.loads((root / "annotations/train.json").read_text())
    anns = data["annotations"]
    assert {a["category_id"] for a in anns} == set(CATEGORY_IDS)
    per_image = [sum(a["image_id"] == im["id"] for a in anns) for im in data["images"]]
    assert 0 in per_image and max(per_image) >= 3  # empty images and crowded ones
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).any() and (areas >= 32**2).any()  # COCO "small" and larger objects
    ious = mask_utils.iou([a["bbox"] for a in anns], [a["bbox"] for a in anns], [0] * len(anns))
    np.fill_diagonal(ious, 0)
    assert ious.max() > 0  # some objects overlap
    for ann in anns:
        assert mask_utils.toBbox(ann["segmentation"]).tolist() == ann["bbox"]
        assert mask_utils.area(ann["segmentation"]) == ann["area"] > 0


def test_readable_as_coco_detection_with_masks(tmp_path):
    root = ensure_shapes_detection_dataset(tmp_path, **SMALL)
    ds = CocoDetection(root / "images", root / "annotations" / "val.json", with_masks=True)
    assert len(ds) == 6 and ds.class_names[1:] == ["disc", "square", "triangle", "cross"]
    assert not ds.report  # nothing to clip or drop in generated data
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and target["masks"].shape[1:] == (64, 64)
