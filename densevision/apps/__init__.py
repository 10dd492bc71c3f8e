"""The ``densevision`` commands besides Lightning's ``fit/validate/test/predict``: each module here is a thin
``main(argv) -> int`` over library functions (``densevision.inference``, ``densevision.datasets``,
``densevision.tasks``). The library never imports this package."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["APPS", "demo_cli_args", "demo_parser", "new_run_dir", "packaged_config"]

# name -> (module, one-line help). Modules are imported only when their command runs.
APPS: dict[str, tuple[str, str]] = {
    "demo": ("densevision.apps.demo", "train on the generated embedded dataset; show metrics and pictures"),
    "benchmark": ("densevision.apps.benchmark", "time and memory of densevision models vs torchvision"),
    "evaluate": ("densevision.apps.evaluate", "score predictions on disk (masks vs labels, COCO results)"),
    "export": ("densevision.apps.export", "export a model to ONNX / TorchScript and verify it"),
    "extract": ("densevision.apps.extract", "write a backbone's multi-scale features for a folder of images"),
    "convert": ("densevision.apps.convert", "dataset converters (YOLO txt / mask PNGs -> COCO json)"),
    "infer": ("densevision.apps.predict", "run a trained checkpoint on images (= predict without --config)"),
    "zoo": ("densevision.apps.zoo", "every registered model: parameters, GFLOPs, CPU latency, results"),
    "configs": ("densevision.apps.configs", "list the shipped configs, or copy one here to edit"),
}


def __getattr__(name: str) -> Any:
    # imported on first use: densevision.tasks.lightning_cli loads Lightning, which `densevision predict
    # --model` never needs and whose import is seconds of its start-up
    if name == "packaged_config":
        from densevision.tasks.lightning_cli import packaged_config

        return packaged_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_run_dir(name: str, parent: str | Path = "runs") -> Path:
    """``runs/<name>/<YYYYmmdd-HHMMSS>``: where a demo's run goes, a fresh folder each time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = Path(parent) / name / stamp, 1
    while folder.exists():
        n += 1
        folder = Path(parent) / name / f"{stamp}-{n}"
    return folder


def demo_parser(task: str, config: Path, description: str | None) -> argparse.ArgumentParser:
    """The options every ``densevision demo <task>`` has: ``--config`` (default ``config``), ``--run-dir``
    and ``--max-epochs``; a demo adds its own."""
    parser = argparse.ArgumentParser(prog=f"densevision demo {task}", description=description)
    parser.add_argument("--config", type=Path, default=config, help="LightningCLI config (YAML)")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help=f"run folder (default runs/demo-{task}/<timestamp>)"
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    return parser


def demo_cli_args(task: str, args: argparse.Namespace, overrides: list[str]) -> tuple[Path, list[str]]:
    """The run folder of a demo parsed by ``demo_parser`` and its LightningCLI arguments: the config, that
    folder as ``trainer.default_root_dir``, the unknown options (``overrides``) and ``--max-epochs``.

    Raises:
        FileNotFoundError: ``--config`` names no file.
    """
    if not args.config.is_file():
        raise FileNotFoundError(f"demo config {args.config} not found; pass --config <path to demo.yaml>")
    run_dir = args.run_dir or new_run_dir(f"demo-{task}")
    cli_args = ["--config", str(args.config), "--trainer.default_root_dir", str(run_dir), *overrides]
    if args.max_epochs is not None:
        cli_args += ["--trainer.max_epochs", str(args.max_epochs)]
    return run_dir, cli_args
