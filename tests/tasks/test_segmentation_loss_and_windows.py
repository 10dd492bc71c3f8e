"""SegmentationTask's ``loss`` and ``sliding_window`` arguments: the label space reaches the loss, the
state dict and checkpoints stay as they were (loadable with weights_only=True), sliding-window evaluation
gives the whole-image metrics for a pointwise model, and a CLI run with both rebuilds through load_task."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from densevision.cli import main
from densevision.datasets import ShapesDataModule
from densevision.tasks.checkpoints import load_task
from densevision.tasks.losses import CrossEntropy, Dice, LovaszSoftmax, WeightedSum
from densevision.tasks.segmentation import SegmentationTask
from tests.test_cli import QUIET, TINY_MODEL, TINY_SHAPES

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmentation"


def _task(**kwargs) -> SegmentationTask:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    return SegmentationTask(model, num_classes=5, **kwargs)


def test_default_loss_is_cross_entropy_with_the_tasks_label_space():
    task = _task(ignore_index=255, class_weights=[1.0, 2.0, 0.5, 1.0, 3.0])
    assert isinstance(task.criterion, CrossEntropy) and task.criterion.ignore_index == 255
    assert task.criterion.class_weights.tolist() == [1.0, 2.0, 0.5, 1.0, 3.0]


def test_the_configured_loss_gets_ignore_index_and_class_weights():
    weights = [1.0, 2.0, 0.5, 1.0, 3.0]
    task = _task(ignore_index=255, class_weights=weights, loss=partial(Dice, smooth=0.5))
    logits, masks = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    masks[:, :2] = 255
    expected = Dice(255, weights, smooth=0.5)(logits, masks)
    torch.testing.assert_close(task.loss(logits, masks), expected)
    # the loss holds no state of its own in checkpoints
    assert task.state_dict().keys() == _task(ignore_index=255, class_weights=weights).state_dict().keys()
    assert "loss" not in task.hparams


def test_bad_sliding_window_options_fail_when_the_task_is_built():
    with pytest.raises(ValueError, match=r"sliding_window takes \['window_size'.*got \{'overlap': 0.5\}"):
        _task(sliding_window={"overlap": 0.5})
    with pytest.raises(ValueError, match=r"blend must be 'constant' or 'gaussian', got 'box'"):
        _task(sliding_window={"window_size": 16, "blend": "box"})


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataModule:
    root = tmp_path_factory.mktemp("shapes")
    return ShapesDataModule(root=str(root), image_size=40, num_train=4, num_val=4, num_test=2, batch_size=2)


def test_sliding_window_validation_equals_whole_images_for_a_pointwise_model(tmp_path, tiny_shapes):
    results = []
    for window in (None, {"window_size": [16, 24], "overlap": 0.5, "flip_tta": True}):
        trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)  # fmt: skip
        task = _task(ignore_index=255, sliding_window=window)
        results.append(trainer.validate(task, datamodule=tiny_shapes, verbose=False)[0])
    assert results[0]["val/mIoU"] == pytest.approx(results[1]["val/mIoU"])
    assert results[0]["val/loss"] == pytest.approx(results[1]["val/loss"], rel=1e-5)


def test_fit_with_a_loss_sum_and_sliding_window_saves_safe_checkpoints(tmp_path, tiny_shapes):
    loss = partial(WeightedSum, terms=[CrossEntropy, LovaszSoftmax], coefficients=[1.0, 0.5])
    task = _task(ignore_index=255, loss=loss, sliding_window={"window_size": 24})
    trainer = Trainer(default_root_dir=tmp_path, max_steps=2, limit_val_batches=1, enable_progress_bar=False,
                      enable_model_summary=False, logger=False)  # fmt: skip
    trainer.fit(task, datamodule=tiny_shapes)
    checkpoint = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert checkpoint["hyper_parameters"]["sliding_window"] == {"window_size": 24}


def test_cli_run_with_loss_and_sliding_window_rebuilds_through_load_task(tmp_path):
    run = tmp_path / "run"
    loss = (
        "{class_path: densevision.tasks.losses.WeightedSum, init_args: {terms: [{class_path: "
        "densevision.tasks.losses.CrossEntropy}, {class_path: densevision.tasks.losses.Dice}]}}"
    )
    argv = ["fit", "--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(tmp_path / "shapes")]
    argv += [*TINY_SHAPES, *TINY_MODEL, *QUIET, "--trainer.max_steps", "1"]
    argv += ["--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(run)]
    argv += ["--model.init_args.loss", loss]
    argv += ["--model.init_args.sliding_window", "{window_size: [32, 32], overlap: 0.5}"]
    assert main(argv) == 0
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert isinstance(task.criterion, WeightedSum) and isinstance(task.criterion.terms[1], Dice)
    assert task.sliding_window == {"window_size": [32, 32], "overlap": 0.5}
    assert task.criterion.terms[1].ignore_index == task.ignore_index
