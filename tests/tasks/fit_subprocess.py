"""Running ``densevision fit`` in a subprocess on the demo configs, shrunk to tiny data and models."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def fit(
    config: str,
    overlay: dict,
    workdir: Path,
    *extra: str,
    timeout: float = 300,
    sigint: signal.Handlers = signal.SIG_DFL,
) -> subprocess.CompletedProcess:
    """``python -m densevision fit --config configs/<config> --config <overlay yaml> *extra`` in
    ``workdir``; one torch thread per process (the test machine has 2 shared cores).

    The child's SIGINT disposition is ``sigint`` and its SIGHUP the default whatever this process inherited
    (a suite started in the background, ``nohup make test &``, runs with both ignored, which children
    would inherit)."""
    overlay_file = workdir / f"overlay_{len(list(workdir.glob('overlay_*.yaml')))}.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    # "-m densevision", not "-c": Lightning's DDP launcher re-executes the command line for each process
    command = [
        sys.executable,
        "-m",
        "densevision",
        "fit",
        "--config",
        str(CONFIGS / config),
        "--config",
        str(overlay_file),
        *extra,
    ]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
        preexec_fn=lambda: _dispositions(sigint),
    )


def _dispositions(sigint: signal.Handlers) -> None:
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def last_metrics(run_dir: Path) -> dict[str, float]:
    """The last logged value of every metric in ``run_dir/metrics.csv`` (CSVLogger)."""
    values: dict[str, float] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


TINY_SEGMENTATION_MODEL = {
    "growth_rate": 4,
    "down_blocks": [1, 1],
    "bottleneck_layers": 1,
    "stem_channels": 8,
}


def tiny_segmentation(
    run_dir: Path,
    data_root: Path,
    *,
    epochs: int,
    callbacks: list[dict],
    num_train: int = 16,
    batch_size: int = 8,
    augment: str = "flip",
) -> dict:
    """Overlay for configs/segmentation/demo.yaml: 32 px shapes, 16 train / 8 val images, 2 steps per epoch,
    validation only after the last epoch, deterministic."""
    return {
        "trainer": {
            "max_epochs": epochs,
            "check_val_every_n_epoch": epochs,
            "num_sanity_val_steps": 0,
            "deterministic": True,
            "default_root_dir": str(run_dir),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "callbacks": callbacks,
        },
        "model": {
            "init_args": {
                "model": {"init_args": TINY_SEGMENTATION_MODEL},
                "lr_scheduler": {"init_args": {"T_max": epochs}},
            }
        },
        "data": {
            "init_args": {
                "root": str(data_root),
                "image_size": 32,
                "num_train": num_train,
                "num_val": 8,
                "num_test": 2,
                "batch_size": batch_size,
                "num_workers": 0,
                "augment": augment,
            }
        },
    }


def tiny_detection(run_dir: Path, data_root: Path, *, epochs: int, batch_size: int) -> dict:
    """Overlay for configs/detection/demo.yaml: 64 px shapes, 8 train / 8 val images, no augmentation,
    validation only after the last epoch, deterministic."""
    return {
        "trainer": {
            "max_epochs": epochs,
            "check_val_every_n_epoch": epochs,
            "deterministic": True,
            "default_root_dir": str(run_dir),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run_dir), "name": "", "version": ""},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True},
                }
            ],
        },
        "model": {
            "init_args": {
                "model": {"init_args": {"min_size": 64, "max_size": 64}},
                "lr_scheduler": {"init_args": {"T_max": epochs}},
            }
        },
        "data": {
            "init_args": {
                "root": str(data_root),
                "num_train": 8,
                "num_val": 8,
                "dataset_image_size": 64,
                "hflip": 0.0,
                "scale_limit": 0.0,
                "color_jitter": 0.0,
                "batch_size": batch_size,
                "num_workers": 0,
            }
        },
    }
