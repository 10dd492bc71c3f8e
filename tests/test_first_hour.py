"""A newcomer's first hour, as the docs tell it, from an empty folder of theirs with only the package:
own images and masks, ``fit`` with the shipped own-data template (by name), ``predict``, ``evaluate``,
``export`` to ONNX, and a resume with ``--ckpt_path last``. Each command must succeed, write what it says,
and print nothing on stderr beyond the lines of ``ALLOWED`` (Lightning's progress notes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.cli_subprocess import TINY, densevision, make_own_dataset

# What a run may say on stderr: Lightning's (and densevision's) progress notes, nothing to act on.
ALLOWED = re.compile(
    r"^(Seed set to \d+"
    r"|GPU available: .*|TPU available: .*"
    r"|`Trainer.fit` stopped: `max_epochs=\d+` reached\."
    r"|Restoring states from the checkpoint path at .*|Restored all states from the checkpoint at .*"
    r"|)$"
)


def _quiet(result, command: str) -> None:
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    unexpected = [line for line in result.stderr.splitlines() if not ALLOWED.match(line)]
    assert unexpected == [], f"{command} printed on stderr: {unexpected}"


@pytest.mark.slow
def test_own_data_to_predictions_evaluation_export_and_resume(tmp_path: Path) -> None:
    make_own_dataset(tmp_path / "data" / "my_data")
    own = ["--data.init_args.root", "data/my_data", "--data.init_args.num_classes", "3", *TINY]
    fit = densevision(tmp_path, "fit", "--config", "segmentation/custom.yaml", *own)
    _quiet(fit, "fit")
    run = tmp_path / "runs" / "custom"
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file() and (run / "val_metrics.json").is_file()
    assert "best checkpoint  runs/custom/checkpoints/best.ckpt (val/mIoU" in fit.stdout

    predict = densevision(tmp_path, "predict", "--checkpoint", str(best.relative_to(tmp_path)),
                          "--input", "data/my_data/val", "--output", "out", "--no-progress")
    _quiet(predict, "predict")
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").glob("*.png"))
    assert masks == ["0.png", "1.png", "2.png", "3.png"]

    evaluate = densevision(tmp_path, "evaluate", "segmentation", "--pred", "out/masks", "--gt",
                           "data/my_data/valannot", "--num-classes", "3")
    _quiet(evaluate, "evaluate")
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert 0.0 <= report["mIoU"] <= 1.0

    export = densevision(tmp_path, "export", "--checkpoint", str(best.relative_to(tmp_path)),
                         "--format", "onnx", "--output", "exported", "--input-size", "32", "48")
    _quiet(export, "export")
    assert list((tmp_path / "exported").glob("*.onnx")) and "verifications within tolerance" in export.stdout

    resume = densevision(tmp_path, "fit", "--config", "segmentation/custom.yaml", *own,
                         "--ckpt_path", "last", "--trainer.max_epochs", "2")
    _quiet(resume, "resume")
    assert torch.load(last, weights_only=True)["global_step"] == 4  # 2 epochs of 2 batches, one resumed
    assert len(list(run.glob("config-resume-*.yaml"))) == 1
