"""DetectionTask + data modules with a tiny torchvision FCOS: training, COCO validation, prediction files."""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import partial

import lightning.pytorch as L
import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from densevision.datasets.detection_datamodule import CocoDetectionDataModule, ShapesDetectionDataModule
from densevision.tasks.detection import DetectionTask
from densevision.tasks.detection_writer import DetectionPredictionWriter


class _TinyBackbone(nn.Module):
    out_channels = 32

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, stride=4, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x):
        return OrderedDict(p3=self.body(x))


def tiny_fcos(num_classes: int = 5) -> FCOS:
    anchors = AnchorGenerator(((16,),), ((1.0,),))
    return FCOS(_TinyBackbone(), num_classes, min_size=64, max_size=64, anchor_generator=anchors,
                score_thresh=0.0, detections_per_img=20)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("shapes")


def _datamodule(root, **kwargs) -> ShapesDetectionDataModule:
    dm = ShapesDetectionDataModule(str(root), num_train=4, num_val=3, dataset_image_size=64, batch_size=2,
                                   **kwargs)
    dm.prepare_data()
    return dm


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_fit_validate_writes_coco_metrics(tmp_path, shapes_root):
    task = DetectionTask(tiny_fcos(), optimizer=partial(torch.optim.SGD, lr=0.01))
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=1, num_sanity_val_steps=1)
    trainer.fit(task, _datamodule(shapes_root))
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert f"val/{name}" in trainer.callback_metrics
    assert {"val/AP", "val/AP50"} <= set(trainer.progress_bar_metrics)  # shown while training
    assert torch.isfinite(trainer.logged_metrics["train/loss"])
    history = json.loads((tmp_path / "coco_metrics.json").read_text())
    assert [entry["epoch"] for entry in history] == [0, 1]  # not the sanity check
    assert set(history[0]) >= {"AP", "AP50", "APs", "step"}


def test_validation_metrics_equal_a_direct_coco_evaluation(tmp_path, shapes_root):
    dm = _datamodule(shapes_root)
    task = DetectionTask(tiny_fcos())
    trainer = _trainer(tmp_path)
    (metrics,) = trainer.validate(task, dm, verbose=False)
    # the same detections evaluated outside Lightning
    dm.setup("validate")
    task.model.eval()
    from densevision.datasets.coco_eval import detections_to_coco, evaluate_coco

    results = []
    with torch.no_grad():
        for image, target in dm.val_dataset:
            (det,) = task.model([image])
            results += detections_to_coco(det, image_id=int(target["image_id"]), input_size=(64, 64),
                                          orig_size=(64, 64),
                                          label_to_category_id=dm.val_dataset.label_to_category_id)
    expected = evaluate_coco(dm.val_dataset.coco, results)
    assert metrics["val/AP50"] == pytest.approx(expected["AP50"], abs=1e-6)


def test_predict_writes_pictures_and_coco_results(tmp_path, shapes_root):
    dm = _datamodule(shapes_root)
    writer = DetectionPredictionWriter(output_dir=str(tmp_path / "pred"), score_threshold=0.0, max_pictures=2)
    trainer = _trainer(tmp_path, callbacks=[writer])
    trainer.predict(DetectionTask(tiny_fcos()), datamodule=dm, return_predictions=False)
    pictures = sorted((tmp_path / "pred").glob("*.png"))
    assert len(pictures) == 2
    # ground truth beside the prediction, each 64 px image enlarged x6 so names and boxes can be read
    from PIL import Image

    assert Image.open(pictures[0]).size == (2 * 384 + 4, 384 + 14)
    results = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == set(dm.val_dataset.ids)
    assert {r["category_id"] for r in results} <= {3, 7, 11, 20}


def test_coco_datamodule_splits_a_single_json(tmp_path, shapes_root):
    dm = _datamodule(shapes_root)  # generates the files
    custom = CocoDetectionDataModule(str(shapes_root / "images"), str(shapes_root / "annotations/train.json"),
                                     val_fraction=0.5, with_masks=True, image_size=48)
    assert custom.num_classes == 5 and custom.class_names == dm.class_names
    # the label -> COCO id mapping the task keeps for densevision predict is the datasets' own
    assert custom.category_ids == dm.category_ids == [0, 3, 7, 11, 20]
    custom.setup("fit")
    assert custom.val_dataset.label_to_category_id == custom.category_ids
    assert sorted(custom.train_dataset.ids + custom.val_dataset.ids) == [1, 2, 3, 4]
    images, targets = next(iter(custom.val_dataloader()))
    assert images[0].shape == (3, 48, 48) and "masks" in targets[0]
