"""Several processes: Lightning DDP on the CPU (gloo, 2 processes, ``--trainer.strategy=ddp
--trainer.devices=2``) trains the segmentation and detection demo configs, shrunk, to the same weights and
validation metrics as one process.

Same global batch: 8 training images, one step per epoch, batch 8 in one process and 4 per process in
DDP, no augmentation. The gradient is averaged over the same 8 images, but BatchNorm normalises over 4
images per process (SyncBatchNorm needs a GPU), so the runs differ beyond float rounding. Tolerances, from
measured differences (2 epochs): weights within 0.05 (measured 1.5e-2 segmentation, 6e-3 detection);
mIoU and pixel accuracy (torchmetrics syncs the confusion matrix) within 0.01 (measured 1e-4, 1.2e-3);
COCO AP / AP50 (predictions gathered from both processes before COCOeval) within 0.02 (both 0 after two
steps from scratch: the weights comparison is the meaningful check there).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tasks.fit_subprocess import fit, last_metrics, tiny_detection, tiny_segmentation

pytestmark = pytest.mark.slow  # subprocesses that train

DDP = [
    "--trainer.strategy=ddp",
    "--trainer.devices=2",
    "--trainer.accelerator=cpu",
]
EPOCHS = 2
WEIGHT_TOLERANCE = 0.05


def _compare(single_dir: Path, ddp_dir: Path, metrics: dict[str, float]) -> None:
    single = torch.load(single_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ddp = torch.load(ddp_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert single["global_step"] == ddp["global_step"] == EPOCHS
    drift = max(
        (ddp["state_dict"][k] - v).abs().max().item()
        for k, v in single["state_dict"].items()
        if v.is_floating_point() and "running" not in k
    )
    print(f"largest weight difference one process vs DDP: {drift:.2e}")
    assert drift < WEIGHT_TOLERANCE
    got_single, got_ddp = last_metrics(single_dir), last_metrics(ddp_dir)
    for name, tolerance in metrics.items():
        print(f"{name}: one process {got_single[name]:.4f}, DDP {got_ddp[name]:.4f}")
        assert got_ddp[name] == pytest.approx(got_single[name], abs=tolerance), name


def _checkpoint() -> list[dict]:
    return [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}]


def test_segmentation_ddp_two_processes_matches_one(tmp_path: Path) -> None:
    data, single_dir, ddp_dir = tmp_path / "shapes", tmp_path / "single", tmp_path / "ddp"
    common = {"epochs": EPOCHS, "callbacks": _checkpoint(), "num_train": 8, "augment": "none"}
    single = fit(
        "segmentation/demo.yaml", tiny_segmentation(single_dir, data, batch_size=8, **common), tmp_path
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = fit(
        "segmentation/demo.yaml", tiny_segmentation(ddp_dir, data, batch_size=4, **common), tmp_path, *DDP
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert (
        "distributed_backend=gloo" in ddp.stderr + ddp.stdout
        and "Starting with 2 processes" in ddp.stderr + ddp.stdout
    )
    _compare(single_dir, ddp_dir, {"val/mIoU": 0.01, "val/pixel_accuracy": 0.01})


def test_detection_ddp_two_processes_matches_one(tmp_path: Path) -> None:
    data, single_dir, ddp_dir = tmp_path / "shapes", tmp_path / "single", tmp_path / "ddp"
    single = fit(
        "detection/demo.yaml", tiny_detection(single_dir, data, epochs=EPOCHS, batch_size=8), tmp_path
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = fit(
        "detection/demo.yaml", tiny_detection(ddp_dir, data, epochs=EPOCHS, batch_size=4), tmp_path, *DDP
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    _compare(single_dir, ddp_dir, {"val/AP": 0.02, "val/AP50": 0.02})
