"""PASCAL VOC XML boxes -> COCO json, difficult boxes ignored as the VOC devkit ignores them, VOC's mAP@0.5
next to COCO AP, and VOCDetectionDataModule through the CLI on a VOC2007 replica."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from densevision.cli import run_lightning_cli
from densevision.datasets import VOCDetectionDataModule, voc_xml_to_coco
from densevision.datasets.coco_detection import coco_from_dict
from densevision.datasets.coco_eval import evaluate_coco
from densevision.datasets.voc_detection import VOC_DETECTION_CLASSES, VOCAnnotationError
from tests.datasets.replicas import voc_detection_replica
from tests.datasets.test_coco_eval import GT_BOXES, _ground_truth, _result


@pytest.fixture
def voc07(tmp_path):
    return voc_detection_replica(tmp_path / "VOCdevkit" / "VOC2007")


def test_xml_boxes_become_coco_boxes_and_difficult_becomes_crowd(voc07):
    data = voc_xml_to_coco(voc07, "trainval")
    assert [c["id"] for c in data["categories"]] == list(range(1, 21))
    assert [c["name"] for c in data["categories"]][:3] == ["aeroplane", "bicycle", "bird"]
    assert data["categories"][-1]["name"] == "tvmonitor"
    assert [i["file_name"] for i in data["images"]] == ["000005.jpg", "000007.jpg", "000009.jpg"]
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (64, 48)
    chair, difficult = data["annotations"][:2]
    # VOC's 1-based inclusive corners (10, 12)-(30, 40) -> 0-based x, y and inclusive width, height
    assert chair["bbox"] == [9, 11, 21, 29] and chair["category_id"] == 9 and chair["iscrowd"] == 0
    assert difficult["iscrowd"] == 1 and difficult["bbox"] == [39, 4, 21, 16]


def _detection(box, score, category_id=9, image_id=1):
    x, y, w, h = box
    return {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score}


def test_difficult_boxes_are_neither_missed_nor_false_positives(voc07):
    coco = coco_from_dict(voc_xml_to_coco(voc07, "trainval"))
    truth = [a for a in coco.dataset["annotations"] if not a["iscrowd"]]
    found = [_detection(a["bbox"], 0.5, a["category_id"], a["image_id"]) for a in truth]
    on_difficult = _detection([39, 4, 21, 16], 0.99)  # the best-scored detection sits on the difficult chair
    metrics = evaluate_coco(coco, [*found, on_difficult])
    assert metrics["AP50_VOC"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    stray = _detection([0, 30, 8, 8], 0.99)  # nothing there: a false positive ranked first
    assert evaluate_coco(coco, [*found, stray])["AP50_VOC"] < 1.0


def test_voc_ap_follows_the_devkit_area_rule_on_a_known_ranking():
    # ranked TP, FP, TP, TP over 3 positives: precision 1 up to recall 1/3, then 3/4 up to recall 1.
    # VOC 2010-12 area: 1/3 * 1 + 2/3 * 3/4 = 0.8333 (COCO's 101-point AP50 samples the same curve).
    results = [_result(1, GT_BOXES[1][0], 0.9), _result(1, [70, 5, 20, 20], 0.8),
               _result(1, GT_BOXES[1][1], 0.7), _result(2, GT_BOXES[2][0], 0.6)]  # fmt: skip
    metrics = evaluate_coco(_ground_truth(), results)
    assert metrics["AP50_VOC"] == pytest.approx(1 / 3 + 2 / 3 * 0.75)
    assert metrics["AP50"] == pytest.approx((34 + 67 * 0.75) / 101)


def test_missing_image_or_xml_is_counted_or_raised(voc07, caplog):
    (voc07 / "Annotations" / "000012.xml").unlink()
    with caplog.at_level(logging.WARNING):
        data = voc_xml_to_coco(voc07, "test")
    assert [i["file_name"] for i in data["images"]] == ["000005.jpg"]
    assert "skipped 1 of 2 images listed in test.txt" in caplog.text
    assert "test.txt line 1 names 000012" in caplog.text
    with pytest.raises(OSError, match=r"test.txt line 1 names 000012, but .*000012.xml does not exist"):
        voc_xml_to_coco(voc07, "test", strict=True)


def test_unknown_class_name_is_named(voc07):
    xml = voc07 / "Annotations" / "000007.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>automobile</name>"))
    with pytest.raises(VOCAnnotationError, match=r"000007.xml: object name 'automobile' is not one of the"):
        voc_xml_to_coco(voc07, "trainval")


def test_data_module_fits_and_validates_through_the_cli(voc07, tmp_path):
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 2,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "run"), "logger": False},
        "model": {"class_path": "densevision.tasks.detection.DetectionTask", "init_args": {"model": {
            "class_path": "densevision.models.detection.densenet_fpn.fcos_densenet_tiny_fpn",
            "init_args": {"min_size": 64, "max_size": 64}}}},
        "data": {"class_path": "densevision.datasets.VOCDetectionDataModule", "init_args": {
            "root": str(voc07), "annotations_dir": str(tmp_path / "voc_coco"), "batch_size": 2}},
    }  # fmt: skip
    path = tmp_path / "voc07.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_lightning_cli(["fit", "--config", str(path)])
    assert cli.model.class_names == ["__background__", *VOC_DETECTION_CLASSES]
    metrics = cli.trainer.callback_metrics
    assert "val/AP" in metrics and "val/AP50_VOC" in metrics
    written = json.loads((tmp_path / "voc_coco" / "VOC2007_test.json").read_text())
    assert len(written["images"]) == 2 and sum(a["iscrowd"] for a in written["annotations"]) == 1
    assert VOCDetectionDataModule(str(voc07)).category_ids == list(range(21))
