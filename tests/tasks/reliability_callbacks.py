"""Callbacks the reliability tests put into ``densevision fit`` subprocesses through their YAML."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAtStep(Callback):
    """SIGKILLs its own process at the end of training step ``step`` (after that step's update): a crash at
    a known point of an epoch, with no chance to clean up."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordStart(Callback):
    """Writes where training (re)starts, ``{"global_step", "epoch"}``, to ``path`` as json."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        start = {"global_step": trainer.global_step, "epoch": trainer.current_epoch}
        Path(self.path).write_text(json.dumps(start))
