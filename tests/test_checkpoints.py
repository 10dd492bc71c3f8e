from __future__ import annotations

import pickle

import pytest
import torch
import yaml

from densevision.models.backbones.densenet import DenseNet
from densevision.models.weights import WeightsError
from densevision.tasks.base import BaseTask
from densevision.tasks.checkpoints import CheckpointError, load_model_checkpoint, load_task, read_checkpoint

TINY = {"growth_rate": 4, "block_config": [1, 1], "stem": "cifar", "stem_channels": 8}
DENSENET = "densevision.models.backbones.densenet.DenseNet"


def write_run(root, model_args: dict, *, hparams: dict, class_path: str = DENSENET, num_classes: int = 3):
    """A run folder as ``densevision fit`` leaves it: config.yaml + checkpoints/last.ckpt."""
    task = BaseTask(DenseNet(**TINY, num_classes=num_classes))
    (root / "checkpoints").mkdir(parents=True)
    ckpt = root / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams, "epoch": 2}, ckpt)
    config = {
        "model": {
            "class_path": "densevision.tasks.base.BaseTask",
            "init_args": {
                "model": {"class_path": class_path, "init_args": model_args},
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
            },
        },
        "trainer": {"max_epochs": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return ckpt, task.model.eval()


def test_load_task_rebuilds_the_trained_model(tmp_path):
    # num_classes is linked from the data module by the CLI: only the hyper-parameters hold it
    ckpt, trained = write_run(tmp_path, dict(TINY), hparams={"num_classes": 3, "_class_path": "x"})
    task = load_task(ckpt)
    assert isinstance(task, BaseTask) and not task.training
    assert task.model.num_classes == 3
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(task.model(x), trained(x), rtol=0, atol=0)


def test_read_checkpoint_describes_the_run(tmp_path):
    ckpt, _ = write_run(tmp_path, {**TINY, "num_classes": 3}, hparams={})
    info = read_checkpoint(ckpt)
    assert (info.model_name, info.num_classes) == ("DenseNet", 3)
    assert "features.conv0.weight" in info.state_dict  # the task's "model." prefix is removed


def test_load_task_without_run_config(tmp_path):
    ckpt, _ = write_run(tmp_path, dict(TINY), hparams={})
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="no config.yaml found"):
        load_task(ckpt)


def test_load_task_refuses_untrusted_class_path(tmp_path):
    ckpt, _ = write_run(tmp_path, {"command": "echo hi"}, hparams={}, class_path="os.system")
    with pytest.raises(CheckpointError, match="'os.system' is outside"):
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
    ckpt, _ = write_run(tmp_path, {**TINY, "num_classes": 3}, hparams={"num_classes": 3})
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
