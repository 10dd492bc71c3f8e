"""``densevision demo segmentation`` (``make demo``): train the config ``configs/segmentation/demo.yaml`` on
the generated "shapes" dataset through the same LightningCLI machinery as ``densevision fit``, then
validate the best checkpoint, draw predictions and print where everything is."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from densevision.apps import demo_cli_args, demo_parser, packaged_config
from densevision.log import get_logger
from densevision.tasks.lightning_cli import run_lightning_cli

log = get_logger(__name__)

DEFAULT_CONFIG = packaged_config("segmentation/demo.yaml")


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = demo_parser("segmentation", DEFAULT_CONFIG, __doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args, overrides = parser.parse_known_args(argv)
    return args, overrides


def main(argv: list[str]) -> int:
    """Train, validate, predict; print the run folder and final mIoU. Unknown options go to LightningCLI
    (e.g. ``--data.init_args.num_train 64``)."""
    args, overrides = _parse(argv)
    run_dir, cli_args = demo_cli_args("segmentation", args, overrides)
    # One thread by default: this small model gains little from a second one, and on a shared 2-core machine
    # two threads waiting on each other cost far more (measured: CPU time per step went up ~50x under load).
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cli = run_lightning_cli(cli_args, run=False)
    trainer, task, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(task, datamodule=data)
    train_seconds = time.perf_counter() - start
    ckpt = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
    results = trainer.validate(task, datamodule=data, ckpt_path=ckpt)
    trainer.predict(task, datamodule=data, ckpt_path=ckpt, return_predictions=False)
    run_dir = Path(trainer.log_dir or run_dir)
    miou = results[0].get("val/mIoU", float("nan")) if results else float("nan")
    best = trainer.checkpoint_callback.best_model_path if ckpt else "(none)"
    log.info(_summary(run_dir, best, time.perf_counter() - start, train_seconds, trainer.current_epoch, miou))
    return 0


def _summary(run_dir: Path, best: str, seconds: float, train_seconds: float, epochs: int, miou: float) -> str:
    metrics_path = run_dir / "val_metrics.json"
    report = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in report.get("per_class_iou", {}).items() if v is not None)
    return "\n".join(
        [
            "",
            f"densevision segmentation demo: {seconds:.0f} s ({epochs} epochs in {train_seconds:.0f} s)",
            f"  run folder      {run_dir}",
            f"  checkpoint      {best}",
            f"  metrics (JSON)  {metrics_path}",
            f"  pictures        {run_dir / 'predictions'}",
            f"  TensorBoard     tensorboard --logdir {run_dir}",
            f"  per-class IoU   {per_class}",
            f"  validation mIoU {miou:.4f}",
        ]
    )
