"""The ``densevision`` command: a dispatcher.

``densevision fit|validate|test|predict --config CONFIG`` is Lightning's ``LightningCLI``
(``densevision.tasks.lightning_cli``, which says what each command writes into the run folder): the YAML
names a task (``model.class_path``) and a data module (``data.class_path``) and mirrors their
constructors. ``CONFIG`` is a file, or the name of a shipped config (``segmentation/demo.yaml``;
``densevision configs list`` names them). The other subcommands are the applications in
``densevision.apps``, each a module with ``main(argv) -> int``.

``densevision predict`` without ``--config`` / ``-c`` runs a trained checkpoint on image files
(``densevision.apps.predict``, also reachable as ``densevision infer``):
``densevision predict --checkpoint run/checkpoints/last.ckpt --input images/ --output out/``.

Lightning is imported only by the commands that use it: ``densevision predict --model EXPORT_DIR
--backend openvino`` starts without it (its import is seconds of a short prediction's time). The names
of ``densevision.tasks.lightning_cli`` re-exported here are imported when first used.

User errors (missing files, bad configs or data, a checkpoint of another model) print one sentence and
exit 1 (2 for a command line that does not parse); ``--debug`` (anywhere on the command line) or
``DENSEVISION_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import traceback
import warnings
from typing import Any

import yaml

from densevision.apps import APPS
from densevision.log import configure_logging, get_logger

log = get_logger(__name__)

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# densevision.cli's public names from densevision.tasks.lightning_cli, imported on first use (PEP 562)
_LIGHTNING_CLI_NAMES = (
    "DATA_LINKS", "DEFAULT_LOGGERS", "DenseVisionArgumentParser", "DenseVisionCLI", "RunFolderError",
    "command_folder", "find_best_checkpoint", "find_last_checkpoint", "fit_summary", "holds_a_run",
    "run_lightning_cli",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_CLI_NAMES:
        return getattr(importlib.import_module("densevision.tasks.lightning_cli"), name)
    if name == "USER_ERRORS":
        return user_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user causes and can fix from the message alone: printed as one line (``--debug``:
    traceback). Lightning's and the training callbacks' errors count only once their modules are loaded:
    no other command can raise them, and importing Lightning to name them would cost every command its
    start-up time."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, yaml.YAMLError)
    if "lightning.pytorch" in sys.modules:
        from lightning.pytorch.utilities.exceptions import MisconfigurationException

        errors += (MisconfigurationException,)
    if "densevision.tasks.callbacks" in sys.modules:
        from densevision.tasks.callbacks import NonFiniteLossError

        errors += (NonFiniteLossError,)
    return errors


def _is_sigterm(err: BaseException) -> bool:
    if "lightning.pytorch" not in sys.modules:  # only Lightning's trainer raises it
        return False
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)

# Third-party messages that say nothing to a densevision user, silenced by their exact text.
NOISY_WARNINGS = (
    # densevision passes its own argv as `args`, so sys.argv always "also" holds them
    r"LightningCLI's args parameter is intended to run from within Python",
    # torch 2.x deprecation inside Lightning's own _pytree helper
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
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


def user_message(err: BaseException) -> str:
    """The sentence of a user error. jsonargparse reports an error raised while building a class from the
    config as a dump of the union of types it tried (``Subtypes: ... Given value: Namespace(...)``); the
    error that caused it, and the class being built, are what the user needs."""
    message = str(err) or type(err).__name__
    if "Given value" not in message:
        return message
    cause = err
    while isinstance(cause.__cause__, user_errors()):
        cause = cause.__cause__
    if cause is err:
        return message.splitlines()[0]
    built = re.search(r"class_path='([\w.]+)'", message)
    where = f" (building {built.group(1).rsplit('.', 1)[-1]} from the config)" if built else ""
    return f"{str(cause) or type(cause).__name__}{where}"


def _usage() -> str:
    lines = ["usage: densevision [--debug] <command> [options]", ""]
    lines += ["training (LightningCLI, see --help of each):"]
    lines += [f"  {name:<10} --config <task>/<name>.yaml" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["  (a config file, or a shipped one by name: `densevision configs list`)"]
    lines += ["", "tools:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in APPS.items()]
    lines += ["", "--debug: show the traceback of an error instead of its one-line message"]
    return "\n".join(lines)


def _names_a_config(args: list[str]) -> bool:
    return any(a in ("-c", "--config") or a.startswith("--config=") for a in args)


def _run(command: str, argv: list[str], rest: list[str]) -> int:
    if command in LIGHTNING_SUBCOMMANDS:
        from densevision.tasks.lightning_cli import run_lightning_cli

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
    except SystemExit as err:
        if not _is_sigterm(err):
            raise
        log.error(f"densevision {argv[0]}: stopped by SIGTERM")
        return 143  # 128 + SIGTERM, as a shell reports a process the signal ended
    except Exception as err:
        if not isinstance(err, user_errors()):
            traceback.print_exc()
            return 1
        if debug:
            raise
        message = user_message(err)
        log.error(f"densevision {argv[0]}: {message}")
        print("(densevision --debug ... shows the traceback)", file=sys.stderr)
        return 1
