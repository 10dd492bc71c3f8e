"""COCO-format detection dataset: reading, category mapping, crowd handling, bad input, transforms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.datasets.coco_detection import (
    CocoDetection,
    CocoFormatError,
    detection_collate,
    split_image_ids,
)
from densevision.datasets.detection_transforms import detection_eval_transforms, detection_train_transforms


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _ann(ann_id: int, image_id: int, category_id: int, bbox: list[float], **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "segmentation": _polygon(*bbox) if all(map(math.isfinite, bbox)) else [], **extra}


def write_coco(root: Path, annotations: list[dict], *, images: int = 2, size: tuple[int, int] = (48, 64),
               missing: tuple[int, ...] = ()) -> Path:
    """Images 1..``images`` of ``size`` (H, W), categories 5 'cat' and 9 'dog' (sparse ids)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id in range(1, images + 1):
        name = f"{image_id}.png"
        if image_id not in missing:
            Image.fromarray(np.full((*size, 3), (40 * image_id) % 256, np.uint8)).save(root / "img" / name)
        entries.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
    data = {"images": entries, "annotations": annotations,
            "categories": [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}]}
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_boxes_labels_masks_and_maps_sparse_ids(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [10, 5, 20, 10]), _ann(2, 1, 5, [0, 0, 8, 6]),
                                     _ann(3, 2, 5, [30, 20, 10, 10])])
    ds = CocoDetection(tmp_path / "img", ann_file, with_masks=True)
    assert ds.class_names == ["__background__", "cat", "dog"] and ds.num_classes == 3
    assert ds.label_to_category_id == [0, 5, 9]
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, 40 / 255))
    assert target["boxes"].tolist() == [[10, 5, 30, 15], [0, 0, 8, 6]]
    assert target["labels"].tolist() == [2, 1]
    assert target["image_id"].item() == 1 and target["orig_size"].tolist() == [48, 64]
    assert target["masks"].shape == (2, 48, 64)
    assert target["masks"][0, 5:15, 10:30].all() and target["masks"][0].sum() <= 21 * 11


def test_crowd_annotations_are_not_targets_but_stay_in_the_ground_truth(tmp_path):
    anns = [_ann(1, 1, 9, [10, 5, 20, 10]), _ann(2, 1, 5, [0, 0, 30, 30], iscrowd=1)]
    ann_file = write_coco(tmp_path, anns)
    ds = CocoDetection(tmp_path / "img", ann_file)
    assert ds[0][1]["labels"].tolist() == [2]
    assert len(ds.coco.getAnnIds(imgIds=[1], iscrowd=True)) == 1


def test_empty_image_gives_empty_targets(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [10, 5, 20, 10])])
    _, target = CocoDetection(tmp_path / "img", ann_file, with_masks=True)[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 48, 64)


def test_boxes_outside_the_image_are_clipped_and_counted(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [-5, 40, 20, 20]), _ann(2, 1, 5, [50, 0, 30, 10])])
    with pytest.warns(UserWarning, match="boxes_clipped=2"):
        ds = CocoDetection(tmp_path / "img", ann_file)
    assert ds[0][1]["boxes"].tolist() == [[0, 40, 15, 48], [50, 0, 64, 10]]
    assert ds.report["boxes_clipped"] == 2


@pytest.mark.parametrize("bbox", [[10, 10, 0, 5], [10, 10, 5, -1], [float("nan"), 1, 5, 5], [70, 0, 5, 5]])
def test_degenerate_nan_and_fully_outside_boxes_are_dropped_and_counted(tmp_path, bbox):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, bbox), _ann(2, 1, 5, [1, 1, 5, 5])])
    with pytest.warns(UserWarning, match="degenerate_boxes_dropped=1"):
        ds = CocoDetection(tmp_path / "img", ann_file)
    assert ds[0][1]["labels"].tolist() == [1]


def test_unknown_category_ids_are_skipped_and_counted(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 42, [1, 1, 5, 5]), _ann(2, 1, 5, [1, 1, 5, 5])])
    with pytest.warns(UserWarning, match="unknown_category_ids=1"):
        ds = CocoDetection(tmp_path / "img", ann_file)
    assert ds[0][1]["labels"].tolist() == [1]


def test_missing_image_files_are_skipped_and_counted(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [1, 1, 5, 5]), _ann(2, 2, 5, [1, 1, 5, 5])], missing=(1,))
    with pytest.warns(UserWarning, match="annotations_of_missing_images=1.*missing_image_files=1"):
        ds = CocoDetection(tmp_path / "img", ann_file)
    assert ds.ids == [2]
    assert [int(t["image_id"]) for _, t in ds] == [2]  # a whole pass never touches the missing file


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(CocoFormatError, match="broken.json: malformed json"):
        CocoDetection(tmp_path, path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("categories"), "field 'categories' must be a list"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\] lacks field\(s\) \['width'\]"),
        (lambda d: d["annotations"][0].pop("category_id"), r"annotations\[0\] lacks field\(s\) \['category_"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 1\) field 'bbox'"),
        (lambda d: d["categories"].append({"id": 5, "name": "again"}), "duplicate category ids"),
    ],
)
def test_invalid_fields_raise_naming_file_and_field(tmp_path, change, message):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [1, 1, 5, 5])])
    data = json.loads(ann_file.read_text())
    change(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match=f"ann.json: {message}"):
        CocoDetection(tmp_path / "img", ann_file)


def test_masks_need_segmentations(tmp_path):
    ann_file = write_coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(CocoFormatError, match="annotation id 7 has no 'segmentation'"):
        CocoDetection(tmp_path / "img", ann_file, with_masks=True)


def test_split_is_seeded_and_disjoint(tmp_path):
    ann_file = write_coco(tmp_path, [], images=10)
    train, val = split_image_ids(ann_file, 0.3, seed=1)
    assert sorted(train + val) == list(range(1, 11)) and len(val) == 3
    assert split_image_ids(ann_file, 0.3, seed=1) == (train, val)
    ds = CocoDetection(tmp_path / "img", ann_file, image_ids=val)
    assert ds.ids == val
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_image_ids(ann_file, 1.0, seed=1)


def test_collate_keeps_lists(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [1, 1, 5, 5])])
    images, targets = detection_collate([s for s in CocoDetection(tmp_path / "img", ann_file)])
    assert len(images) == len(targets) == 2 and targets[1]["boxes"].shape == (0, 4)


def _mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_flip_moves_boxes_and_masks_together(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [10, 5, 20, 10])])
    flip = detection_train_transforms(None, hflip=1.0, scale_limit=0.0, color_jitter=0.0)
    _, target = CocoDetection(tmp_path / "img", ann_file, transforms=flip, with_masks=True)[0]
    assert target["boxes"].tolist() == [[34, 5, 54, 15]]
    assert _mask_box(target["masks"][0]) == [34, 5, 54, 15]


def test_random_scale_and_crop_keep_boxes_labels_and_masks_consistent(tmp_path):
    anns = [_ann(i + 1, 1, 9 if i % 2 else 5, [4 + 11 * i, 4 + 7 * i, 10, 8]) for i in range(5)]
    ann_file = write_coco(tmp_path, anns, images=1, size=(64, 64))
    train = detection_train_transforms(48, scale_limit=0.3, min_visibility=0.5, seed=0)
    ds = CocoDetection(tmp_path / "img", ann_file, transforms=train, with_masks=True)
    counts = set()
    for _ in range(12):
        image, target = ds[0]
        assert image.shape == (3, 48, 48)
        boxes = target["boxes"]
        counts.add(len(boxes))
        assert len(boxes) == len(target["labels"]) == len(target["masks"])
        assert (boxes >= 0).all() and (boxes[:, 2:] <= 48).all()
        for box, mask in zip(boxes.tolist(), target["masks"], strict=True):
            assert np.allclose(_mask_box(mask), box, atol=1.5)
    assert len(counts) > 1  # some crops drop boxes: with their labels and masks, as checked above


def test_eval_letterbox_is_deterministic_and_isotropic(tmp_path):
    ann_file = write_coco(tmp_path, [_ann(1, 1, 9, [10, 5, 20, 10])])
    ds = CocoDetection(tmp_path / "img", ann_file, transforms=detection_eval_transforms(32))
    image, target = ds[0]
    assert image.shape == (3, 32, 32)
    assert torch.allclose(target["boxes"], torch.tensor([[5.0, 2.5, 15.0, 7.5]]))
    assert torch.equal(ds[0][0], image)
    assert image[:, 24:, :].abs().sum() == 0  # 48x64 -> 24x32, padded at the bottom


def test_reads_coco128(shared_data):
    root = shared_data / "coco128"
    ds = CocoDetection(root / "images" / "train2017", root / "annotations" / "instances_train2017.json",
                       with_masks=True)
    assert len(ds) == 102 and ds.num_classes == 81
    assert ds.label_to_category_id[-1] == 90  # sparse COCO ids 1..90 -> labels 1..80
    crowd = ds.coco.getAnnIds(iscrowd=True)
    assert crowd  # kept for evaluation ...
    crowd_image = ds.coco.anns[crowd[0]]["image_id"]
    _, target = ds[ds.ids.index(crowd_image)]
    assert len(target["labels"]) == len(ds.annotations(crowd_image))  # ... but not a training target
    assert len(target["labels"]) < len(ds.coco.getAnnIds(imgIds=[crowd_image]))
    assert target["masks"].shape[0] == len(target["boxes"]) and target["masks"].any()
