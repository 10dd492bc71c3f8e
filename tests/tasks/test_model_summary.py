"""The model summary at the start of ``fit`` leaves out FLOPs that Lightning did not count (Lightning
prints a column of zeros and ``Total FLOPs: 0`` for a module without ``example_input_array``), keeps
them when they were counted, and a summary callback the config names is left as the user chose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary
from torch import nn

from densevision.tasks import callbacks as callbacks_module
from densevision.tasks.callbacks import RunModelSummary
from densevision.tasks.lightning_cli import run_lightning_cli
from tests.cli_subprocess import TINY, make_own_dataset


class _Tiny(LightningModule):
    def __init__(self, example: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        if example:
            self.example_input_array = torch.zeros(1, 3, 8, 8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 3, 8, 8), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: LightningModule, tmp_path: Path) -> None:
    trainer = Trainer(
        max_steps=1, callbacks=[RunModelSummary()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )
    trainer.fit(module)


@pytest.mark.parametrize("rich", [True, False])
def test_uncounted_flops_are_left_out(tmp_path, capsys, caplog, monkeypatch, rich: bool) -> None:
    monkeypatch.setattr(callbacks_module, "_rich_available", lambda: rich)
    with caplog.at_level(logging.INFO):
        _fit(_Tiny(example=False), tmp_path)
    printed = capsys.readouterr().out + caplog.text
    assert "Total params" in printed and "Trainable params" in printed
    assert "net" in printed and "Sequential" in printed
    assert "FLOPs" not in printed and "Flops" not in printed


def test_counted_flops_are_shown(tmp_path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO):
        _fit(_Tiny(example=True), tmp_path)
    printed = capsys.readouterr().out + caplog.text
    assert "FLOPs" in printed or "Flops" in printed
    assert "Total FLOPs: 0" not in printed and "0          Total Flops" not in printed


def _cli(tmp_path: Path, *extra: str):
    make_own_dataset(tmp_path / "data")
    at = TINY.index("--trainer.enable_model_summary")
    tiny = [*TINY[:at], *TINY[at + 2:]]
    args = ["--config", "segmentation/custom.yaml", "--data.init_args.root", str(tmp_path / "data"),
            "--data.init_args.num_classes", "3", "--trainer.default_root_dir", str(tmp_path / "run"), *tiny,
            *extra]
    return run_lightning_cli(args, run=False)


def test_cli_replaces_lightnings_default_summary(tmp_path) -> None:
    cli = _cli(tmp_path)
    summaries = [c for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]
    assert [type(c) for c in summaries] == [RunModelSummary]


def test_cli_keeps_a_summary_the_config_names(tmp_path) -> None:
    cli = _cli(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelSummary",
               "--trainer.callbacks.max_depth=3")
    summaries = [c for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]
    assert [type(c) for c in summaries] == [ModelSummary]
