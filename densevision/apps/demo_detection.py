"""``densevision demo detection``: train ``configs/detection/demo.yaml`` (FCOS on a tiny DenseNet-FPN) on
the generated shapes dataset on the CPU, report COCO mAP and draw the validation predictions.

It is the same LightningCLI run a user starts with ``densevision fit --config configs/detection/demo.yaml``
followed by ``predict`` with the best checkpoint, in a fresh run folder ``runs/demo-detection/<time>/``
(as the segmentation demo's ``runs/demo-segmentation/<time>/``). Unknown options are LightningCLI
overrides, e.g. ``densevision demo detection --trainer.max_epochs=2``.
"""

from __future__ import annotations

import argparse
import json
import time

from densevision.apps import demo_cli_args, demo_parser, packaged_config
from densevision.log import get_logger
from densevision.tasks.lightning_cli import run_lightning_cli

log = get_logger(__name__)

DEMO_CONFIG = packaged_config("detection/demo.yaml")
TARGET_AP50 = 0.8


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    return demo_parser("detection", DEMO_CONFIG, __doc__).parse_known_args(argv)


def ap_summary(metrics: dict[str, float]) -> str:
    """``AP 0.512, AP50 0.800, ...``; COCO's -1 (no object of that size in the validation set) as n/a."""
    sizes = {"APs": "small", "APm": "medium", "APl": "large"}
    parts = []
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        value = metrics.get(key)
        if value is None:
            continue
        shown = f"{value:.3f}" if value >= 0 else f"n/a (no {sizes.get(key, '')} objects)".replace("  ", " ")
        parts.append(f"{key} {shown}")
    return ", ".join(parts)


def main(argv: list[str]) -> int:
    args, overrides = _parse(argv)
    run_dir, cli_args = demo_cli_args("detection", args, overrides)
    start = time.perf_counter()
    cli = run_lightning_cli(["fit", *cli_args])
    trainer = cli.trainer
    checkpoint = trainer.checkpoint_callback.best_model_path or None
    trainer.predict(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    history_file = run_dir / cli.model.metrics_file
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    minutes = (time.perf_counter() - start) / 60
    if history:
        best = max(history, key=lambda m: m["AP50"])
        log.info(f"\ndetection demo: {minutes:.1f} min; best epoch {best['epoch']}: {ap_summary(best)}")
        verdict = "reached" if best["AP50"] >= TARGET_AP50 else "MISSED"
        log.info(f"target AP50 >= {TARGET_AP50}: {verdict}")
    log.info(f"run folder: {run_dir}\n  metrics per epoch: {history_file}\n"
             f"  pictures and COCO results: {run_dir / 'predictions'}\n  checkpoint: {checkpoint}")
    return 0
