"""Determinism: the segmentation demo config, shrunk, trained twice with the same seed on the CPU (with its
flip augmentation, reseeded from torch per sample) gives the same weights and metrics, bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from densevision.cli import run_lightning_cli
from tests.tasks.fit_subprocess import CONFIGS, tiny_segmentation


def _train(run_dir: Path, data: Path, workdir: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    overlay = workdir / f"{run_dir.name}.yaml"
    overlay.write_text(yaml.safe_dump(tiny_segmentation(run_dir, data, epochs=2, callbacks=[])))
    cli = run_lightning_cli(
        ["fit", "--config", str(CONFIGS / "segmentation/demo.yaml"), "--config", str(overlay)]
    )
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}, metrics


def test_same_seed_same_weights_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    weights_a, metrics_a = _train(tmp_path / "a", data, tmp_path)
    weights_b, metrics_b = _train(tmp_path / "b", data, tmp_path)
    assert {"val/mIoU", "val/loss", "train/loss_epoch"} <= metrics_a.keys()
    assert metrics_a == metrics_b
    for name, tensor in weights_a.items():
        assert torch.equal(weights_b[name], tensor), name
