"""Running the ``densevision`` command as a user does: a subprocess in a folder of the user's, with a tiny
own dataset (SegNet layout) made there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# configs/segmentation/custom.yaml's model shrunk (and one epoch of a couple of steps), for speed
TINY = [
    "--model.init_args.model.init_args.growth_rate", "4",
    "--model.init_args.model.init_args.down_blocks", "[1, 1]",
    "--model.init_args.model.init_args.bottleneck_layers", "1",
    "--model.init_args.model.init_args.stem_channels", "8",
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
    "--data.init_args.batch_size", "2",
]  # fmt: skip


def make_own_dataset(root: Path, *, splits=("train", "val"), n: int = 4, num_classes: int = 3) -> Path:
    """``n`` random 32x48 RGB images per split with class-index masks (0..num_classes-1)."""
    rng = np.random.default_rng(0)
    for split in splits:
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / split / f"{i}.jpg")
            mask = rng.integers(0, num_classes, (32, 48), dtype=np.uint8)
            Image.fromarray(mask).save(root / f"{split}annot" / f"{i}.png")
    return root


def densevision(cwd: Path, *args: str, env: dict | None = None, timeout: float = 300):
    """``python -m densevision *args`` in ``cwd`` (this checkout's package), one torch thread."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    environ.pop("DENSEVISION_DEBUG", None) if "DENSEVISION_DEBUG" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", "densevision", *args], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=timeout,
    )
