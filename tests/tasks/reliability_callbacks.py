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


class SignalAt(Callback):
    """Sends ``signal_name`` (``SIGTERM``, ``SIGINT``) to its own process once: at the first validation
    batch after training started (``at="validation"``) or after training step ``step`` (``at="train"``),
    as a cluster's stop or a Ctrl+C would arrive."""

    def __init__(self, signal_name: str, at: str = "validation", step: int = 1) -> None:
        self.signum = getattr(signal, signal_name)
        self.at, self.step, self.sent = at, step, False

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer: Trainer, *args) -> None:
        if self.at == "validation" and not trainer.sanity_checking:
            self._send()

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if self.at == "train" and trainer.global_step == self.step:
            self._send()
