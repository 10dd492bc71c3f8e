"""The ``densevision`` command.

``densevision fit|validate|test|predict --config configs/...yaml`` is Lightning's ``LightningCLI``: the
YAML names a task (``model.class_path``) and a data module (``data.class_path``) and mirrors their
constructors. The other subcommands are the applications in ``densevision.apps``, each a module with
``main(argv) -> int``.

``densevision predict`` without ``--config`` / ``-c`` runs a trained checkpoint on image files
(``densevision.apps.predict``, also reachable as ``densevision infer``):
``densevision predict --checkpoint run/checkpoints/last.ckpt --input images/ --output out/``.
"""

from __future__ import annotations

import importlib
import sys

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from densevision.apps import APPS

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# The data module owns the label space; these attributes of the instantiated data module are passed to the
# task (and its model) so a config states them once. A link is skipped where the data module lacks the
# attribute or the task the argument (other tasks, e.g. detection, are not bound by these).
DATA_LINKS = (
    ("data.num_classes", "model.init_args.num_classes"),
    ("data.num_classes", "model.init_args.model.init_args.num_classes"),
    ("data.ignore_index", "model.init_args.ignore_index"),
    ("data.class_names", "model.init_args.class_names"),
    ("data.class_weights", "model.init_args.class_weights"),
    ("data.resize", "model.init_args.input_size"),
)


class DenseVisionArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, accepting links into models built by preset functions.

    jsonargparse 4.53 passes ``linked_targets`` to ``add_function_arguments``, which does not take it,
    when a link targets an argument of a ``class_path`` that is a function (``fcdensenet56``); it only
    marks the targets as not required, which the caller does again afterwards, so it is dropped here.
    """

    def add_function_arguments(self, function, *args, linked_targets=None, **kwargs):
        return super().add_function_arguments(function, *args, **kwargs)


class DenseVisionCLI(LightningCLI):
    """LightningCLI with densevision's defaults: any task / data module chosen by ``class_path``, the
    label space linked from the data module into the task and model (``DATA_LINKS``), and one folder per
    run: unless the config names loggers, CSV and TensorBoard log straight into ``trainer.default_root_dir``,
    so its checkpoints (``<run>/checkpoints``, best and last), metrics JSON and pictures lie together and
    ``--ckpt_path last`` resumes the previous run of the same config.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        for source, target in DATA_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.logger not in (None, True) or trainer.default_root_dir is None:
            return
        trainer.logger = [
            Namespace(
                class_path=f"lightning.pytorch.loggers.{name}",
                init_args=Namespace(save_dir=trainer.default_root_dir, name="", version=""),
            )
            for name in ("CSVLogger", "TensorBoardLogger")
        ]


def run_lightning_cli(argv: list[str], *, run: bool = True) -> DenseVisionCLI:
    """Run LightningCLI on ``argv`` (e.g. ``["fit", "--config", "configs/segmentation/demo.yaml"]``).

    With ``run=False`` there is no subcommand: the config is parsed and the trainer, task and data module
    are built (``cli.trainer``, ``cli.model``, ``cli.datamodule``) for the caller to drive, as the demos do.
    """
    return DenseVisionCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=argv,
        run=run,
        auto_configure_optimizers=False,
        parser_class=DenseVisionArgumentParser,
    )


def _usage() -> str:
    lines = ["usage: densevision <command> [options]", "", "training (LightningCLI, see --help of each):"]
    lines += [f"  {name:<10} --config configs/<task>/<name>.yaml" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "tools:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in APPS.items()]
    return "\n".join(lines)


def _names_a_config(args: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densevision`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from densevision import __version__

        print(f"densevision {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "predict" and not _names_a_config(rest):
        command = "infer"
    if command in LIGHTNING_SUBCOMMANDS:
        run_lightning_cli(argv)
        return 0
    if command in APPS:
        module = importlib.import_module(APPS[command][0])
        return int(module.main(rest) or 0)
    print(f"densevision: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2
