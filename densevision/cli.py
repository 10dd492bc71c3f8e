"""The ``densevision`` command.

``densevision fit|validate|test|predict --config configs/...yaml`` is Lightning's ``LightningCLI``: the
YAML names a task (``model.class_path``) and a data module (``data.class_path``) and mirrors their
constructors. The other subcommands are tools, each a module with ``main(argv) -> int``.

``densevision predict`` without ``--config`` / ``-c`` runs a trained checkpoint on image files
(``densevision.infer``, also reachable as ``densevision infer``): ``densevision predict --checkpoint
run/checkpoints/last.ckpt --input images/ --output out/``.
"""

from __future__ import annotations

import importlib
import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# name -> (module, one-line help). Modules are imported only when their command runs.
TOOL_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("densevision.demos", "train on the generated embedded dataset and show metrics and pictures"),
    "benchmark": ("densevision.benchmark", "time and memory of densevision models vs torchvision"),
    "export": ("densevision.export", "export a model to ONNX / TorchScript and verify it"),
    "extract": ("densevision.extract", "write a backbone's multi-scale features for a folder of images"),
    "convert": ("densevision.convert", "dataset converters (YOLO txt / mask PNGs -> COCO json)"),
    "infer": ("densevision.infer", "run a trained checkpoint on images (= predict without --config)"),
    "zoo": ("densevision.zoo", "table of every registered model: parameters, GFLOPs, CPU latency, results"),
}


class DenseVisionCLI(LightningCLI):
    """LightningCLI with densevision's defaults: any task / data module chosen by ``class_path``."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)


def run_lightning_cli(argv: list[str]) -> None:
    """Run LightningCLI on ``argv`` (e.g. ``["fit", "--config", "configs/segmentation/demo.yaml"]``)."""
    DenseVisionCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
    )


def _usage() -> str:
    lines = ["usage: densevision <command> [options]", "", "training (LightningCLI, see --help of each):"]
    lines += [f"  {name:<10} --config configs/<task>/<name>.yaml" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "tools:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in TOOL_SUBCOMMANDS.items()]
    return "\n".join(lines)


def _names_a_config(args: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densevision`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "predict" and not _names_a_config(rest):
        command = "infer"
    if command in LIGHTNING_SUBCOMMANDS:
        run_lightning_cli(argv)
        return 0
    if command in TOOL_SUBCOMMANDS:
        module = importlib.import_module(TOOL_SUBCOMMANDS[command][0])
        return int(module.main(rest) or 0)
    print(f"densevision: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2
