"""LightningCLI as densevision runs it: the label space linked from the data module, one folder per run, and
``--ckpt_path last`` / ``best`` found in that folder whatever callbacks a config has.

``densevision fit|validate|test|predict --config ...`` (``densevision.cli``) and the demos
(``densevision.apps.demo_*``) both call :func:`run_lightning_cli`; this module imports neither.

A run folder (``trainer.default_root_dir``; ``runs/<config name>`` when a config sets none) only grows:
``fit`` writes ``config.yaml``, ``checkpoints/``, ``metrics.csv`` and TensorBoard events into it; a resume
(``--ckpt_path last``) appends to ``metrics.csv`` and saves its config as ``config-resume-<time>.yaml``;
``validate``, ``test`` and ``predict`` write everything (config, metrics, pictures) into a folder of their
own, ``<run>/<command>-<time>/``, also when given the ``config.yaml`` a fit saved. A ``fit`` without
``--ckpt_path`` into a folder that already holds a run is refused with the command that resumes it. A
command that fails leaves no folder or file behind (a fit keeps what it wrote once it saved a checkpoint).
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, RichModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from densevision.log import get_logger
from densevision.tasks.callbacks import RunModelSummary
from densevision.tasks.private_apis import drop_linked_targets

log = get_logger(__name__)

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


class ConfigNotFoundError(FileNotFoundError):
    """A ``--config`` names a file that is neither on disk nor among the shipped configs."""


def packaged_config(relative: str) -> Path:
    """A config shipped inside the package (``densevision/configs/<relative>``; the repository's ``configs/``
    is a link to that folder), so installed wheels find it too."""
    return Path(str(files("densevision") / "configs" / relative))


def shipped_configs() -> list[str]:
    """The names of the shipped configs, ``segmentation/demo.yaml`` ..., sorted."""
    root = packaged_config("")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def resolve_config(name: str | Path) -> Path:
    """``name`` itself when it exists, else the shipped config of that name (``segmentation/demo.yaml``,
    ``configs/segmentation/demo.yaml`` or ``demo.yaml`` when only one is so named).

    Raises:
        ConfigNotFoundError: neither exists; the message says where it looked.
    """
    path = Path(name)
    if path.is_file():
        return path
    relative = path.as_posix().removeprefix("./").removeprefix("configs/")
    names = shipped_configs()
    matches = [n for n in names if n == relative] or [n for n in names if n.rsplit("/", 1)[-1] == relative]
    if len(matches) == 1:
        return packaged_config(matches[0])
    hint = f"; it could be any of {matches}" if matches else ""
    raise ConfigNotFoundError(
        f"config {name} not found: not in {Path.cwd()} nor among the shipped configs in "
        f"{packaged_config('')}{hint}. `densevision configs list` names them; "
        "`densevision configs copy NAME` copies one here to edit"
    )


def _config_arguments(argv: list[str]) -> Iterator[int]:
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-c", "--config"):
            yield i + 1


def with_resolved_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config NAME`` that is not a file replaced by the shipped config of that name."""
    argv = list(argv)
    for i in _config_arguments(argv):
        argv[i] = str(resolve_config(argv[i]))
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i] = f"--config={resolve_config(arg.split('=', 1)[1])}"
    return argv


def default_run_dir(argv: list[str]) -> Path:
    """Where a run goes when its config sets no ``trainer.default_root_dir``: ``runs/<last config name>``."""
    configs = [argv[i] for i in _config_arguments(argv)]
    configs += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return Path("runs") / (Path(configs[-1]).stem if configs else "run")


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


def find_last_checkpoint(run_dir: Path, asked: str = "last") -> Path:
    """The newest ``last*.ckpt`` in ``<run_dir>/checkpoints`` (as Lightning's ``ckpt_path="last"`` picks).

    Raises:
        RunFolderError: there is none, naming the folder searched.
    """
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        what = "holds no last*.ckpt" if folder.is_dir() else "does not exist"
        verb = "resume" if asked == "last" else "load"
        raise RunFolderError(
            f"--ckpt_path {asked}: nothing to {verb}: {folder} {what} (the checkpoints of "
            f"trainer.default_root_dir={run_dir}). Start a new run without --ckpt_path, or pass a checkpoint "
            "file."
        )
    return found[-1]


def monitored_best(checkpoint: Path) -> tuple[Path, str, float | None] | None:
    """The best checkpoint a ``ModelCheckpoint`` with a ``monitor`` recorded in ``checkpoint``: (path,
    monitored metric, its value), or None when no callback monitored anything. A recorded path that moved
    with its run folder is looked up beside ``checkpoint``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    for key, saved in (state.get("callbacks") or {}).items():
        if not str(key).startswith("ModelCheckpoint") or not saved.get("monitor"):
            continue
        best = saved.get("best_model_path")
        if not best:
            continue
        path = Path(best) if Path(best).is_file() else checkpoint.parent / Path(best).name
        score = saved.get("best_model_score")
        return path, saved["monitor"], None if score is None else float(score)
    return None


def find_best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint by its monitored metric, as its newest ``last*.ckpt`` recorded it.

    Raises:
        RunFolderError: the run has no last checkpoint, monitored no metric, or its best file is gone.
    """
    last = find_last_checkpoint(run_dir, asked="best")
    best = monitored_best(last)
    if best is None:
        raise RunFolderError(
            f"--ckpt_path best: the run in {run_dir} monitored no metric (no ModelCheckpoint with a monitor "
            f"recorded a best checkpoint in {last}), so none is best. Pass --ckpt_path last or a checkpoint "
            "file"
        )
    if not best[0].is_file():
        raise RunFolderError(f"--ckpt_path best: {best[0]} (best by {best[1]}) no longer exists; pass a file")
    return best[0]


def check_checkpoint_file(path: Path) -> None:
    """Refuse, in one sentence, a ``--ckpt_path`` that is missing or that ``torch.load(weights_only=True)``
    cannot read (not a checkpoint, truncated, or holding objects that are not plain data).

    Raises:
        FileNotFoundError: no such file.
        RunFolderError: the file is not a readable checkpoint.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {path}: no such file (or pass last / best: the run's own)")
    try:
        if not zipfile.is_zipfile(path):  # what torch.save has written since torch 1.6
            raise ValueError("not a file torch.save wrote")
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunFolderError(
            f"--ckpt_path {path}: not a checkpoint torch.load(weights_only=True) can read ({reason}); pass a "
            ".ckpt that `densevision fit` wrote"
        ) from err


class _Undo:
    """What a command creates, removed if it fails: a failed command leaves no folder or stray file.

    A fit that saved a checkpoint keeps everything (the run can resume); distributed workers leave the
    tidying to rank zero.
    """

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.existed = False
        self.before: set[Path] = set()

    def watch(self, folder: Path) -> None:
        self.existed = folder.exists()
        while not folder.parent.exists():  # `runs/` of `runs/my`, when this command makes both
            folder = folder.parent
        self.folder = folder
        self.before = set(folder.rglob("*")) if self.existed else set()

    def __call__(self) -> None:
        if self.folder is None or _process_rank() != 0 or not self.folder.exists():
            return
        new = set(self.folder.rglob("*")) - self.before
        if any(p.suffix == ".ckpt" for p in new):
            return
        if not self.existed:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _is_default_logger(logger: object, run_dir: Path) -> bool:
    """A logger that densevision put into a saved config (``DEFAULT_LOGGERS`` writing into the run folder),
    so reusing that config with ``validate`` logs into the command's own folder as a fresh config would."""
    if not isinstance(logger, (Namespace, dict)):
        return False
    init = logger.get("init_args") or {}
    save_dir = init.get("save_dir") if isinstance(init, (Namespace, dict)) else None
    return logger.get("class_path") in DEFAULT_LOGGERS and save_dir is not None and Path(save_dir) == run_dir


class DenseVisionArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, accepting links into models built by preset functions
    (``densevision.tasks.private_apis.drop_linked_targets``)."""

    def add_function_arguments(self, function, *args, **kwargs):
        return super().add_function_arguments(function, *args, **drop_linked_targets(kwargs))

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
    folder of the command. Checkpoints always go to ``<run>/checkpoints`` with a ``last.ckpt`` (whatever
    checkpoint callback the config sets, or none), which is where ``--ckpt_path last`` looks.

    Args:
        run_dir: the run folder when the config sets no ``trainer.default_root_dir``.
        undo: told which folder the command writes into, and called by the caller if the command fails.
        Others: as ``LightningCLI``.
    """

    def __init__(self, *args, run_dir: Path | None = None, undo: _Undo | None = None, **kwargs) -> None:
        self.default_run_dir = run_dir
        self.undo = undo or _Undo()
        self.given_ckpt_path: str | None = None
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then hold back ``ckpt_path`` until the classes are built: LightningCLI would parse a
        checkpoint's hyper-parameters over the command's config, silently replacing a model the user changed
        on the command line (a checkpoint that does not fit must be an error) and failing on values linked
        from the data module; densevision's checkpoints rebuild themselves where no config is given
        (``densevision predict --checkpoint``)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            self.given_ckpt_path = self.config[subcommand].get("ckpt_path")
            self.config[subcommand].ckpt_path = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        for source, target in DATA_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, with Lightning's default model summary (added when the config names none)
        replaced by :class:`RunModelSummary`, which leaves out the FLOPs Lightning did not count."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = config.trainer.get("callbacks") or []
        # before the trainer exists: Lightning appends its default to the config's own list
        given_ids = {id(c) for c in (given if isinstance(given, list) else [given])}
        trainer = super().instantiate_trainer(**kwargs)
        for i, callback in enumerate(trainer.callbacks):
            if type(callback) in (ModelSummary, RichModelSummary) and id(callback) not in given_ids:
                trainer.callbacks[i] = RunModelSummary()
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if self.subcommand is not None:
            config.ckpt_path = self.given_ckpt_path
            if trainer.default_root_dir is None and self.default_run_dir is not None:
                trainer.default_root_dir = str(self.default_run_dir)
        if trainer.default_root_dir is None:
            return
        run_dir = Path(trainer.default_root_dir)
        self.run_dir = run_dir
        log_dir = run_dir
        saved_loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        if saved_loggers and all(_is_default_logger(lg, run_dir) for lg in saved_loggers):
            trainer.logger = None
        if self.subcommand is not None:
            self._resolve_ckpt_path(config, run_dir)
            if self.subcommand == "fit":
                self._check_fit_folder(run_dir, config.ckpt_path)
                self.undo.watch(run_dir)
            else:
                log_dir = command_folder(run_dir, self.subcommand)
                trainer.default_root_dir = str(log_dir)
                self.undo.watch(log_dir)
        if trainer.logger not in (None, True):
            return
        trainer.logger = [
            Namespace(class_path=class_path, init_args=Namespace(save_dir=str(log_dir), name="", version=""))
            for class_path in DEFAULT_LOGGERS
        ]

    @staticmethod
    def _resolve_ckpt_path(config: Namespace, run_dir: Path) -> None:
        if config.get("ckpt_path") == "last":
            config.ckpt_path = str(find_last_checkpoint(run_dir))
        elif config.get("ckpt_path") == "best":
            config.ckpt_path = str(find_best_checkpoint(run_dir))
        elif config.get("ckpt_path") is not None:
            check_checkpoint_file(Path(config.ckpt_path))

    def _check_fit_folder(self, run_dir: Path, ckpt_path: str | None) -> None:
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

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        run_dir = getattr(self, "run_dir", None)
        if run_dir is None:
            return
        callbacks = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        for callback in callbacks:
            if callback.dirpath is None:
                callback.dirpath = str(run_dir / "checkpoints")
        if callbacks and not any(c.save_last for c in callbacks):
            # `--ckpt_path last` must find something whatever checkpoint callback a config sets
            callbacks[0].save_last = True

    def after_fit(self) -> None:
        log.info(fit_summary(self.trainer, getattr(self, "run_dir", None)))


def fit_summary(trainer, run_dir: Path | None) -> str:
    """Where a fit left its run, its best checkpoint (when a metric was monitored) with that metric, and its
    last checkpoint, in a few lines. Read from the last checkpoint's record, so the summary is the same
    under every strategy (``ddp_spawn`` trains in other processes)."""
    lines = [f"run folder       {run_dir or trainer.default_root_dir}"]
    callback = trainer.checkpoint_callback
    last = None
    if isinstance(callback, ModelCheckpoint):
        last = callback.last_model_path or None
        if last is None and callback.dirpath:
            found = sorted(Path(callback.dirpath).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
            last = str(found[-1]) if found else None
    best = monitored_best(Path(last)) if last and Path(last).is_file() else None
    if best is not None:
        path, monitor, score = best
        metric = f" ({monitor} {score:.4f})" if score is not None else ""
        lines.append(f"best checkpoint  {path}{metric}")
    if last:
        lines.append(f"last checkpoint  {last} (resume: --ckpt_path last)")
    return "\n".join(["", "fit finished:", *(f"  {line}" for line in lines)])


def run_lightning_cli(argv: list[str], *, run: bool = True) -> DenseVisionCLI:
    """Run LightningCLI on ``argv`` (e.g. ``["fit", "--config", "segmentation/demo.yaml"]``; a config that is
    not a file is looked up among the shipped ones).

    With ``run=False`` there is no subcommand: the config is parsed and the trainer, task and data module
    are built (``cli.trainer``, ``cli.model``, ``cli.datamodule``) for the caller to drive, as the demos do.
    A command that fails removes what it created (``_Undo``).
    """
    try:
        argv = with_resolved_configs(argv)
    except ConfigNotFoundError as err:  # a usage error, reported as the parser reports the others
        sys.stderr.write(f"error: densevision: {err}\n")
        sys.exit(2)
    undo = _Undo()
    try:
        return DenseVisionCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": False},
            # Lightning seeds with 0 anyway when none is set, but warns about it; set, it does not
            seed_everything_default=0,
            args=argv,
            run=run,
            auto_configure_optimizers=False,
            parser_class=DenseVisionArgumentParser,
            run_dir=default_run_dir(argv) if run else None,
            undo=undo,
        )
    except Exception:
        undo()
        raise
