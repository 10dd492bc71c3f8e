"""Checkpoints: a fit run's checkpoint rebuilds its task through Lightning's loading from the config the
CLI saved in it; class paths outside the trusted packages and crafted pickles are refused."""

from __future__ import annotations

import pickle

import lightning
import pytest
import torch

from densevision.models.backbones.densenet import DenseNet
from densevision.models.weights import WeightsError
from densevision.tasks.checkpoints import CheckpointError, load_model_checkpoint, load_task, read_checkpoint
from densevision.tasks.segmentation import SegmentationTask

TINY = {"growth_rate": 4, "block_config": [1, 1], "stem": "cifar", "stem_channels": 8}
DENSENET = "densevision.models.backbones.densenet.DenseNet"
TASK = "densevision.tasks.segmentation.SegmentationTask"


def cli_hparams(model_args: dict, class_path: str = DENSENET, **task_args) -> dict:
    """The hyper-parameters LightningCLI hands a task (``BaseTask.save_config_hyperparameters``)."""
    return {
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "_class_path": TASK,
        "model": {"class_path": class_path, "init_args": model_args},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        **task_args,
    }


def write_checkpoint(path, hparams: dict, num_classes: int = 3):
    """A checkpoint as ``densevision fit`` writes it (the task's state dict and hyper-parameters)."""
    task = SegmentationTask(DenseNet(**TINY, num_classes=num_classes), num_classes=num_classes)
    state = {"state_dict": task.state_dict(), "hyper_parameters": hparams, "epoch": 2}
    torch.save({**state, "pytorch-lightning_version": lightning.__version__}, path)
    return path, task.model.eval()


def test_load_task_rebuilds_the_trained_model(tmp_path):
    hparams = cli_hparams({**TINY, "num_classes": 3}, num_classes=3, class_names=["a", "b", "c"])
    ckpt, trained = write_checkpoint(tmp_path / "last.ckpt", hparams)
    task = load_task(ckpt)
    assert isinstance(task, SegmentationTask) and not task.training
    assert task.model.num_classes == 3 and task.class_names == ["a", "b", "c"]
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(task.model(x), trained(x), rtol=0, atol=0)


def test_task_built_in_python_keeps_plain_arguments_only():
    task = SegmentationTask(DenseNet(**TINY, num_classes=3), num_classes=3, input_size=(8, 8))
    assert "model" not in task.hparams and "optimizer" not in task.hparams
    assert task.hparams["num_classes"] == 3 and tuple(task.hparams["input_size"]) == (8, 8)


def test_read_checkpoint_describes_the_run(tmp_path):
    ckpt, _ = write_checkpoint(tmp_path / "last.ckpt", cli_hparams({**TINY, "num_classes": 3}))
    info = read_checkpoint(ckpt)
    assert (info.model_name, info.num_classes) == ("DenseNet", 3)
    assert "features.conv0.weight" in info.state_dict  # the task's "model." prefix is removed


def test_load_task_without_a_task_config(tmp_path):
    ckpt, _ = write_checkpoint(tmp_path / "last.ckpt", {"num_classes": 3})
    with pytest.raises(CheckpointError, match="holds no task config.*load_model_checkpoint"):
        load_task(ckpt)


def test_load_task_refuses_untrusted_class_path(tmp_path):
    ckpt, _ = write_checkpoint(
        tmp_path / "a.ckpt", cli_hparams({"command": "echo hi"}, class_path="os.system")
    )
    with pytest.raises(
        CheckpointError, match=r"hyper_parameters\.model\.class_path: class_path 'os.system' is outside"
    ):
        load_task(ckpt)
    nested = cli_hparams({**TINY, "norm_layer": {"class_path": "evil.Norm", "init_args": {}}})
    ckpt, _ = write_checkpoint(tmp_path / "b.ckpt", nested)
    with pytest.raises(CheckpointError, match="'evil.Norm' is outside"):
        load_task(ckpt)
    other_task = {**cli_hparams(dict(TINY)), "_class_path": "evil.Task"}
    ckpt, _ = write_checkpoint(tmp_path / "c.ckpt", other_task)
    with pytest.raises(CheckpointError, match="'evil.Task' is outside"):
        load_task(ckpt)


def test_weights_that_do_not_fit_the_described_model(tmp_path):
    hparams = cli_hparams({**TINY, "num_classes": 5}, num_classes=5)
    ckpt, _ = write_checkpoint(tmp_path / "last.ckpt", hparams, num_classes=3)
    with pytest.raises(CheckpointError, match=r"does not fit this config's model.*model.classifier.weight"):
        load_task(ckpt)


class _WritesMarkerWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {}, "hyper_parameters": _WritesMarkerWhenUnpickled(marker)}, f, protocol=2)
    torch.save({"payload": _WritesMarkerWhenUnpickled(marker)}, tmp_path / "evil2.pt")
    for path in (ckpt, tmp_path / "evil2.pt"):
        with pytest.raises(WeightsError, match="refused to load"):
            read_checkpoint(path)
        with pytest.raises(WeightsError, match="refused to load"):
            load_task(path)
    assert not marker.exists()


def test_checkpoint_of_another_model_names_both(tmp_path):
    ckpt, _ = write_checkpoint(tmp_path / "last.ckpt", cli_hparams({**TINY, "num_classes": 3}, num_classes=3))
    model = DenseNet(**TINY, num_classes=3)
    with pytest.raises(CheckpointError, match=r"trained as 'DenseNet' \(num_classes=3\).*'densenet40_k12'"):
        load_model_checkpoint(model, ckpt, model_name="densenet40_k12")
    with pytest.raises(CheckpointError, match=r"num_classes=3\), but .* 'DenseNet' \(num_classes=5\)"):
        load_model_checkpoint(DenseNet(**TINY, num_classes=5), ckpt, model_name="DenseNet", num_classes=5)
    load_model_checkpoint(model, ckpt, model_name="DenseNet", num_classes=3)


def test_plain_state_dict_that_does_not_fit(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(DenseNet(**TINY, num_classes=3).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unknown model\) does not fit .*'tiny'.*classifier.weight"):
        load_model_checkpoint(DenseNet(**TINY, num_classes=7), path, model_name="tiny")
