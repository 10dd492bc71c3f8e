"""The ``densevision`` command.

``densevision fit|validate|test|predict --config configs/...yaml`` is Lightning's ``LightningCLI``: the
YAML names a task (``model.class_path``) and a data module (``data.class_path``) and mirrors their
constructors. The other subcommands are the applications in ``densevision.apps``, each a module with
``main(argv) -> int``.

``densevision predict`` without ``--config`` / ``-c`` runs a trained checkpoint on image files
(``densevision.apps.predict``, also reachable as ``densevision infer``):
``densevision predict --checkpoint run/checkpoints/last.ckpt --input images/ --output out/``.

A run folder (``trainer.default_root_dir``) only grows: ``fit`` writes ``config.yaml``, ``checkpoints/``,
``metrics.csv`` and TensorBoard events into it; a resume (``--ckpt_path``) appends to ``metrics.csv`` and
saves its config as ``config-resume-<time>.yaml``; ``validate``, ``test`` and ``predict`` write
everything (config, metrics, pictures) into a folder of their own, ``<run>/<command>-<time>/``. A ``fit``
without ``--ckpt_path`` into a folder that already holds a run is refused with the command that resumes
it: LightningCLI's own default (``SaveConfigCallback`` refuses to overwrite a run's ``config.yaml``
rather than mix two runs), with the reason said.

User errors (missing files, bad configs or data, a checkpoint of another model) print one sentence and
exit 1; ``--debug`` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from densevision.apps import APPS
from densevision.log import configure_logging, get_logger
from densevision.tasks.callbacks import NonFiniteLossError

log = get_logger(__name__)

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
    ("data.category_ids", "model.init_args.category_ids"),
    ("data.mean", "model.init_args.mean"),
    ("data.std", "model.init_args.std"),
    ("data.palette", "model.init_args.palette"),
)
DEFAULT_LOGGERS = ("densevision.tasks.loggers.RunCSVLogger", "lightning.pytorch.loggers.TensorBoardLogger")
# Set by the first process of a distributed run, inherited by the others it launches: one command folder.
_COMMAND_DIR_ENV = "DENSEVISION_COMMAND_DIR"


class RunFolderError(ValueError):
    """A command cannot use the run folder as asked (a fit over an old run, nothing to resume)."""


# Errors a user causes and can fix from the message alone: printed as one line (``--debug``: traceback).
USER_ERRORS = (OSError, ValueError, yaml.YAMLError, MisconfigurationException, NonFiniteLossError)

# Third-party messages that say nothing to a densevision user, silenced by their exact text.
NOISY_WARNINGS = (
    # densevision passes its own argv as `args`, so sys.argv always "also" holds them
    r"LightningCLI's args parameter is intended to run from within Python",
    # torch 2.x deprecation inside Lightning's own _pytree helper
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # CSVLogger and TensorBoardLogger share the run folder on purpose
    r"Experiment logs directory .* exists and is not empty",
    # a resume continues in its own checkpoint folder (a new fit there is refused before this point)
    r"Checkpoint directory .* exists and is not empty",
)
NOISY_INFO_PREFIXES = ("💡 Tip:",)  # Lightning's advertisements for its cloud services


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(NOISY_INFO_PREFIXES)


def silence_third_party_noise() -> None:
    """Filters the messages of ``NOISY_WARNINGS`` and ``NOISY_INFO_PREFIXES`` (and only those)."""
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())


def _process_rank() -> int:
    return int(os.environ.get("LOCAL_RANK") or os.environ.get("RANK") or 0)


def command_folder(run_dir: Path, subcommand: str) -> Path:
    """``<run>/<subcommand>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when taken), the same on every process."""
    inherited = os.environ.get(_COMMAND_DIR_ENV)
    if inherited and _process_rank() != 0:
        return Path(inherited)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = run_dir / f"{subcommand}-{stamp}", 1
    while folder.exists():
        n += 1
        folder = run_dir / f"{subcommand}-{stamp}-{n}"
    os.environ[_COMMAND_DIR_ENV] = str(folder)
    return folder


def holds_a_run(run_dir: Path) -> list[Path]:
    """What in ``run_dir`` shows an earlier fit wrote there: its ``config.yaml`` and checkpoints."""
    found = [run_dir / "config.yaml"] if (run_dir / "config.yaml").is_file() else []
    return found + sorted((run_dir / "checkpoints").glob("*.ckpt"))


def find_last_checkpoint(run_dir: Path) -> Path:
    """The newest ``last*.ckpt`` in ``<run_dir>/checkpoints`` (as Lightning's ``ckpt_path="last"`` picks).

    Raises:
        RunFolderError: there is none, naming the folder searched.
    """
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        what = "holds no last*.ckpt" if folder.is_dir() else "does not exist"
        raise RunFolderError(
            f"--ckpt_path last: nothing to resume: {folder} {what} (the checkpoints of "
            f"trainer.default_root_dir={run_dir}). Start a new run without --ckpt_path, or pass a checkpoint "
            "file."
        )
    return found[-1]


class DenseVisionArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, accepting links into models built by preset functions.

    jsonargparse 4.53 passes ``linked_targets`` to ``add_function_arguments``, which does not take it,
    when a link targets an argument of a ``class_path`` that is a function (``fcdensenet56``); it only
    marks the targets as not required, which the caller does again afterwards, so it is dropped here.
    """

    def add_function_arguments(self, function, *args, linked_targets=None, **kwargs):
        return super().add_function_arguments(function, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        """A config error as one sentence, not the 50 lines of usage jsonargparse prints before it."""
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        sys.stderr.write(f"error: densevision: {message}\n(add --help to the command for its options)\n")
        sys.exit(2)


class DenseVisionCLI(LightningCLI):
    """LightningCLI with densevision's defaults: any task / data module chosen by ``class_path``, the
    label space linked from the data module into the task and model (``DATA_LINKS``), and one folder per
    run (``trainer.default_root_dir``, the module docstring says what each command writes there). Unless
    the config names loggers, CSV (appending, ``RunCSVLogger``) and TensorBoard log straight into the
    folder of the command. Checkpoints always go to ``<run>/checkpoints`` (whatever logger the config sets),
    which is where ``--ckpt_path last`` looks.
    """

    def _parse_ckpt_path(self) -> None:
        """Keep the command's config as given. LightningCLI would parse the checkpoint's hyper-parameters
        over it, silently replacing a model the user changed on the command line (a checkpoint that does
        not fit must be an error) and failing on values linked from the data module; densevision's
        checkpoints rebuild themselves where no config is given (``densevision predict --checkpoint``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        for source, target in DATA_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            return
        run_dir = Path(trainer.default_root_dir)
        self.run_dir = run_dir
        log_dir = run_dir
        if self.subcommand is not None:
            ckpt_path = config.get("ckpt_path")
            if ckpt_path == "last":
                config.ckpt_path = str(find_last_checkpoint(run_dir))
            if self.subcommand == "fit":
                earlier = holds_a_run(run_dir)
                if ckpt_path is None and earlier and _process_rank() == 0:
                    raise RunFolderError(
                        f"{run_dir} already holds a run ({', '.join(p.name for p in earlier[:3])}): resume "
                        f"it with --ckpt_path last, or start a new run in another folder "
                        f"(--trainer.default_root_dir {run_dir}-2)"
                    )
                if earlier:  # a resume: its config beside the first, never over it
                    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                    self.save_config_kwargs["config_filename"] = f"config-resume-{stamp}.yaml"
            else:
                log_dir = command_folder(run_dir, self.subcommand)
                trainer.default_root_dir = str(log_dir)
        if trainer.logger not in (None, True):
            return
        trainer.logger = [
            Namespace(
                class_path=class_path,
                init_args=Namespace(save_dir=str(log_dir), name="", version=""),
            )
            for class_path in DEFAULT_LOGGERS
        ]

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        run_dir = getattr(self, "run_dir", None)
        if run_dir is None:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(run_dir / "checkpoints")

    def after_fit(self) -> None:
        log.info(fit_summary(self.trainer, getattr(self, "run_dir", None)))


def fit_summary(trainer, run_dir: Path | None) -> str:
    """Where a fit left its run, its best checkpoint and that checkpoint's metric, in a few lines."""
    lines = [f"run folder       {run_dir or trainer.default_root_dir}"]
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        score = callback.best_model_score
        metric = f" ({callback.monitor} {float(score):.4f})" if callback.monitor and score is not None else ""
        lines.append(f"best checkpoint  {callback.best_model_path}{metric}")
    if isinstance(callback, ModelCheckpoint) and callback.last_model_path:
        lines.append(f"last checkpoint  {callback.last_model_path} (resume: --ckpt_path last)")
    return "\n".join(["", "fit finished:", *(f"  {line}" for line in lines)])


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
        save_config_kwargs={"overwrite": False},
        args=argv,
        run=run,
        auto_configure_optimizers=False,
        parser_class=DenseVisionArgumentParser,
    )


def _usage() -> str:
    lines = ["usage: densevision [--debug] <command> [options]", ""]
    lines += ["training (LightningCLI, see --help of each):"]
    lines += [f"  {name:<10} --config configs/<task>/<name>.yaml" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "tools:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in APPS.items()]
    lines += ["", "--debug: show the traceback of an error instead of its one-line message"]
    return "\n".join(lines)


def _names_a_config(args: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in args)


def _run(command: str, argv: list[str], rest: list[str]) -> int:
    if command in LIGHTNING_SUBCOMMANDS:
        run_lightning_cli(argv)
        return 0
    module = importlib.import_module(APPS[command][0])
    return int(module.main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densevision`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DENSEVISION_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    configure_logging(debug)
    silence_third_party_noise()
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
    if command not in LIGHTNING_SUBCOMMANDS and command not in APPS:
        print(f"densevision: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return _run(command, argv, rest)
    except SIGTERMException:
        log.error(f"densevision {argv[0]}: stopped by SIGTERM")
        return 143  # 128 + SIGTERM, as a shell reports a process the signal ended
    except USER_ERRORS as err:
        if debug:
            raise
        message = str(err) or type(err).__name__
        log.error(f"densevision {argv[0]}: {message}")
        print("(densevision --debug ... shows the traceback)", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
