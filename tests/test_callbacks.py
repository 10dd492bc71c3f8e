"""StopOnNonFiniteLoss: a diverging run stops before the bad update and keeps its last good checkpoint."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from densevision.tasks.base import BaseTask
from densevision.tasks.callbacks import NonFiniteLossError


class _RegressionTask(BaseTask):
    def __init__(self, nan_at_step: int) -> None:
        super().__init__(model=nn.Linear(4, 1))
        self.nan_at_step = nan_at_step

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x), y)
        if self.global_step == self.nan_at_step:
            loss = loss * float("nan")
        return loss


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def test_nan_loss_stops_before_the_update_and_keeps_last_good_checkpoint(tmp_path):
    task = _RegressionTask(nan_at_step=5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2, save_top_k=-1)
    trainer = Trainer(
        max_epochs=2, callbacks=[checkpoint], logger=False, enable_progress_bar=False, accelerator="cpu"
    )
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 0, global step 5.*last good"):
        trainer.fit(task, _loader())
    assert all(torch.isfinite(p).all() for p in task.parameters())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
