"""``densevision demo segmentation`` end to end on a tiny dataset and model: run folder, outputs, summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from densevision.apps.demo import main as demo_main
from tests.test_cli import QUIET, TINY_MODEL, TINY_SHAPES


def test_demo_writes_checkpoint_metrics_and_pictures(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    argv = ["segmentation", "--run-dir", str(run), "--max-epochs", "1"]
    argv += ["--data.init_args.root", str(tmp_path / "shapes"), *TINY_SHAPES, *TINY_MODEL, *QUIET]
    with caplog.at_level(logging.INFO, logger="densevision"):  # the summary goes through the logger
        assert demo_main(argv) == 0
    out = caplog.text
    assert f"run folder      {run}" in out and "validation mIoU" in out
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((run / "val_metrics.json").read_text())
    assert report["class_names"] == ["background", "stripes", "checker", "dots", "speckle"]
    assert f"{report['mIoU']:.4f}" in out
    assert (run / "predictions" / "legend.png").is_file()
    assert len(list((run / "predictions").glob("0*.png"))) == 2
