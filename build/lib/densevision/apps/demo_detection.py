"""``densevision demo detection``: train ``configs/detection/demo.yaml`` (FCOS on a tiny DenseNet-FPN) on
the generated shapes dataset on the CPU, report COCO mAP and draw the validation predictions.

It is the same LightningCLI run a user starts with ``densevision fit --config configs/detection/demo.yaml``
followed by ``predict`` with the best checkpoint; extra arguments are LightningCLI overrides, e.g.
``densevision demo detection --trainer.max_epochs=2``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from densevision.apps import packaged_config
from densevision.cli import run_lightning_cli

DEMO_CONFIG = packaged_config("detection/demo.yaml")
TARGET_AP50 = 0.8


def main(argv: list[str]) -> int:
    if not DEMO_CONFIG.is_file():
        print(f"demo config not found at {DEMO_CONFIG}; run from a source checkout", file=sys.stderr)
        return 2
    start = time.perf_counter()
    cli = run_lightning_cli(["fit", "--config", str(DEMO_CONFIG), *argv])
    trainer = cli.trainer
    checkpoint = trainer.checkpoint_callback.best_model_path or None
    trainer.predict(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    run_dir = Path(trainer.log_dir or trainer.default_root_dir)
    history = json.loads((run_dir / cli.model.metrics_file).read_text())
    best = max(history, key=lambda m: m["AP50"])
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndetection demo: {minutes:.1f} min; best epoch {best['epoch']}: "
          + ", ".join(f"{k} {best[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    verdict = "reached" if best["AP50"] >= TARGET_AP50 else "MISSED"
    print(f"target AP50 >= {TARGET_AP50}: {verdict}")
    print(f"run folder: {run_dir}\n  metrics per epoch: {run_dir / cli.model.metrics_file}\n"
          f"  pictures and COCO results: {run_dir / 'predictions'}\n  checkpoint: {checkpoint}")
    return 0
