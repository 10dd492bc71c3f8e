"""Interrupted training: a ``densevision fit`` process SIGKILLed mid-epoch resumes with ``--ckpt_path last``
from its last checkpoint and ends exactly where an uninterrupted run with the same seed ends; SIGTERM and
SIGINT save a resumable ``last.ckpt`` and exit non-zero.

Checkpoints are written at every epoch end (2 steps per epoch); the kill comes after step 3, in the middle
of the second epoch, and the resume starts from the end of the first. Resuming from a checkpoint written
*inside* an epoch is exact only with a resumable data loader (Lightning warns otherwise), which these data
modules do not have; note that Lightning counts a ``every_n_train_steps`` checkpoint taken at the last
batch of an epoch as inside it (the batch is not yet "completed"), so such a resume repeats data.

Tolerance: the final weights and validation metrics of the resumed and the uninterrupted run must be
equal to 1e-6: on the CPU with ``deterministic: true``, one thread and ``num_workers: 0`` both runs do the
same floating-point operations in the same order, so any difference means a piece of state was lost.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch

from tests.tasks.fit_subprocess import fit, last_metrics, tiny_segmentation

pytestmark = pytest.mark.slow  # subprocesses that train

EPOCHS = 2  # x 2 steps


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _callbacks(run_dir: Path, *extra: dict) -> list[dict]:
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "every_n_epochs": 1,
            "save_on_train_epoch_end": True,
            "save_last": True,
            "save_top_k": -1,
            "filename": "{epoch}-{step}",
            "enable_version_counter": False,
            "monitor": None,
        },
    }
    start = {
        "class_path": "tests.tasks.reliability_callbacks.RecordStart",
        "init_args": {"path": str(run_dir / "start.json")},
    }
    return [checkpoint, start, *extra]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = fit(
        "segmentation/demo.yaml",
        tiny_segmentation(full_dir, data, epochs=EPOCHS, callbacks=_callbacks(full_dir)),
        tmp_path,
    )
    assert full.returncode == 0, full.stderr[-3000:]

    kill = {"class_path": "tests.tasks.reliability_callbacks.KillAtStep", "init_args": {"step": 3}}
    overlay = tiny_segmentation(killed_dir, data, epochs=EPOCHS, callbacks=_callbacks(killed_dir, kill))
    killed = fit("segmentation/demo.yaml", overlay, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = killed_dir / "checkpoints" / "last.ckpt"
    # atomic save: whatever the kill interrupted, last.ckpt is a complete checkpoint (loads, weights only)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and state["epoch"] == 0
    assert not (killed_dir / "checkpoints" / "epoch=1-step=4.ckpt").exists()

    resumed = fit(
        "segmentation/demo.yaml",
        tiny_segmentation(killed_dir, data, epochs=EPOCHS, callbacks=_callbacks(killed_dir)),
        tmp_path,
        "--ckpt_path",
        "last",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((killed_dir / "start.json").read_text()) == {"global_step": 2, "epoch": 1}

    # the two runs agree up to the checkpoint the resume starts from
    step2_full = torch.load(
        full_dir / "checkpoints" / "epoch=0-step=2.ckpt", map_location="cpu", weights_only=True
    )
    step2_killed = torch.load(
        killed_dir / "checkpoints" / "epoch=0-step=2.ckpt", map_location="cpu", weights_only=True
    )
    for name, tensor in step2_full["state_dict"].items():
        assert torch.equal(step2_killed["state_dict"][name], tensor), name
    final_full = torch.load(full_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    final_resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert final_resumed["global_step"] == final_full["global_step"] == 2 * EPOCHS
    for name, tensor in final_full["state_dict"].items():
        torch.testing.assert_close(final_resumed["state_dict"][name], tensor, atol=1e-6, rtol=0, msg=name)
    metrics_full, metrics_resumed = last_metrics(full_dir), last_metrics(killed_dir)
    for name in ("val/loss", "val/mIoU", "val/pixel_accuracy"):
        assert metrics_resumed[name] == pytest.approx(metrics_full[name], abs=1e-6), name


# the demo config's own checkpoint callback (monitor val/mIoU, best.ckpt and last.ckpt)
_CHECKPOINT = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
               "init_args": {"monitor": "val/mIoU", "mode": "max", "save_last": True, "filename": "best"}}


def _stopped_by(signal_name: str, at: str, tmp_path: Path, sigint: signal.Handlers = signal.SIG_DFL):
    run_dir = tmp_path / signal_name
    stop = {"class_path": "tests.tasks.reliability_callbacks.SignalAt",
            "init_args": {"signal_name": signal_name, "at": at, "step": 1}}
    overlay = tiny_segmentation(run_dir, tmp_path / "shapes", epochs=EPOCHS, callbacks=[_CHECKPOINT, stop])
    overlay["trainer"]["check_val_every_n_epoch"] = 1
    return run_dir, overlay, fit("segmentation/demo.yaml", overlay, tmp_path, sigint=sigint)


def test_sigterm_during_the_first_validation_saves_a_resumable_checkpoint(tmp_path: Path) -> None:
    run_dir, overlay, stopped = _stopped_by("SIGTERM", "validation", tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2  # after epoch 0
    overlay["trainer"]["callbacks"][1]["init_args"]["at"] = "never"  # the same callbacks, no signal
    resumed = fit("segmentation/demo.yaml", overlay, tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2 * EPOCHS


def test_sigint_mid_epoch_saves_a_resumable_checkpoint(tmp_path: Path) -> None:
    run_dir, overlay, stopped = _stopped_by("SIGINT", "train", tmp_path)
    assert stopped.returncode != 0, stopped.stderr[-3000:]
    assert "stopped by SIGINT" in stopped.stderr
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 1 and state["epoch"] == 0  # inside epoch 0, where the signal came
    # quiet: densevision's stop message says what a resume does; Lightning does not add notes to it
    assert "weights_only" not in stopped.stderr
    overlay["trainer"]["callbacks"][1]["init_args"]["at"] = "never"
    resumed = fit("segmentation/demo.yaml", overlay, tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from a checkpoint that ended before the epoch ended" not in resumed.stderr


def test_sighup_mid_epoch_saves_a_resumable_checkpoint_as_sigterm_does(tmp_path: Path) -> None:
    run_dir, _, stopped = _stopped_by("SIGHUP", "train", tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGHUP (handled as SIGTERM)" in stopped.stderr
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 1 and state["epoch"] == 0


def test_a_fit_started_with_sigint_ignored_keeps_ignoring_it(tmp_path: Path) -> None:
    """A background job of a shell without job control (``cmd &`` in a script) inherits SIGINT ignored, so
    that a Ctrl+C typed at the terminal stops only the foreground: densevision keeps it that way."""
    run_dir, _, finished = _stopped_by("SIGINT", "train", tmp_path, sigint=signal.SIG_IGN)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "stopped by" not in finished.stderr and f"`max_epochs={EPOCHS}` reached" in finished.stderr
    assert {row["epoch"] for row in _rows(run_dir / "metrics.csv")} == {str(e) for e in range(EPOCHS)}
