"""SegmentationTask: loss with ignore index and class weights, IoU metrics, metrics JSON, pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from PIL import Image
from torch import nn

from densevision.datasets import ShapesDataModule
from densevision.tasks.segmentation import SegmentationPictureWriter, SegmentationTask, iou_from_confusion


def make_task(num_classes: int = 3, **kwargs) -> SegmentationTask:
    return SegmentationTask(nn.Conv2d(3, num_classes, 3, padding=1), num_classes=num_classes, **kwargs)


def test_loss_ignores_the_ignore_index() -> None:
    task = make_task(ignore_index=255)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    mask = torch.randint(0, 3, (2, 5, 6))
    mask[:, :2] = 255
    loss = task.loss(logits, mask)
    valid = mask != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], mask[valid])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[:, :, :2] == 0).all() and (logits.grad[:, :, 2:] != 0).any()


def test_loss_uses_class_weights() -> None:
    task = make_task(class_weights=[0.5, 1.0, 4.0])
    logits, mask = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    torch.testing.assert_close(
        task.loss(logits, mask), F.cross_entropy(logits, mask, torch.tensor([0.5, 1.0, 4.0]))
    )
    with pytest.raises(ValueError, match="got 2 class_weights for num_classes=3"):
        make_task(class_weights=[1.0, 2.0])


def test_metrics_match_a_hand_computed_confusion_matrix() -> None:
    task = make_task(ignore_index=9)
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 9, 9]])
    prediction = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 2]])  # the last two pixels are void: not counted
    task.confusion["val"].update(prediction, target)
    confusion = task.confusion["val"].compute()
    assert confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    metrics = iou_from_confusion(confusion)
    # IoU = TP / (TP + FP + FN): class 0 2/3, class 1 1/(1+1+1), class 2 1/(1+1+0)
    assert metrics["iou"] == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert metrics["mIoU"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(4 / 6)


def test_absent_class_is_left_out_of_the_mean() -> None:
    metrics = iou_from_confusion(torch.tensor([[3, 1, 0], [1, 3, 0], [0, 0, 0]]))
    assert math.isnan(metrics["iou"][2])
    assert metrics["mIoU"] == pytest.approx(3 / 5)


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataModule:
    root = tmp_path_factory.mktemp("shapes")
    return ShapesDataModule(root=str(root), image_size=32, num_train=4, num_val=4, num_test=2, batch_size=2)


def test_validate_writes_metrics_json_with_class_names(tmp_path: Path, tiny_shapes: ShapesDataModule) -> None:
    task = make_task(5, ignore_index=255, class_names=tiny_shapes.class_names)
    trainer = Trainer(
        default_root_dir=tmp_path, logger=True, enable_progress_bar=False, enable_model_summary=False
    )
    result = trainer.validate(task, datamodule=tiny_shapes)
    report = json.loads((Path(trainer.log_dir) / "val_metrics.json").read_text())
    assert report["class_names"] == tiny_shapes.class_names
    assert list(report["per_class_iou"]) == tiny_shapes.class_names
    assert report["mIoU"] == pytest.approx(result[0]["val/mIoU"])
    assert sum(map(sum, report["confusion_matrix"])) == 4 * 32 * 32


def test_predict_writes_side_by_side_pictures(tmp_path: Path, tiny_shapes: ShapesDataModule) -> None:
    writer = SegmentationPictureWriter(output_dir=str(tmp_path / "pictures"), max_images=3)
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[writer], enable_progress_bar=False)
    trainer.predict(make_task(5), datamodule=tiny_shapes, return_predictions=False)
    assert [p.name for p in writer.written] == ["00000.png", "00001.png", "00002.png"]
    picture = Image.open(writer.written[0])
    # three enlarged panels (image | truth | prediction) and the legend
    assert picture.width > 3 * 192 and picture.height >= 192
    assert (tmp_path / "pictures" / "legend.png").is_file()
