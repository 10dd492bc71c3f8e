"""A checkpoint as ``densevision fit`` writes it, without running a fit: the task's state dict and the
hyper-parameters LightningCLI hands the task (``BaseTask.save_config_hyperparameters``)."""

from __future__ import annotations

from pathlib import Path

import lightning
import torch
from torch import nn

from densevision.tasks.segmentation import SegmentationTask

TASK = "densevision.tasks.segmentation.SegmentationTask"


def cli_hparams(model_class_path: str, model_args: dict, *, task: str = TASK, **task_args) -> dict:
    return {
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "_class_path": task,
        "model": {"class_path": model_class_path, "init_args": model_args},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        **task_args,
    }


def write_fit_checkpoint(path: Path, model: nn.Module, hparams: dict, *, num_classes: int) -> Path:
    """Save ``SegmentationTask(model)``'s weights with ``hparams`` at ``path`` (folders made)."""
    task = SegmentationTask(model, num_classes=num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": task.state_dict(), "hyper_parameters": hparams, "epoch": 2}
    torch.save({**state, "pytorch-lightning_version": lightning.__version__}, path)
    return path
