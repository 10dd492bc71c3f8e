"""densevision's messages: one ``densevision`` logger (modules log to ``densevision.<module>``), shown by
process rank zero only, so a DDP run does not repeat each message once per process.

The library only logs; the ``densevision`` command (``densevision.cli``) installs the handler that prints
(``configure_logging``). A program using the library configures ``logging`` as it likes.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "densevision"


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``densevision.apps.predict`` ...): a child of ``densevision``."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def process_rank() -> int:
    """This process's global rank: Lightning's once a strategy has set it, else the launcher's
    environment (``RANK``, ``LOCAL_RANK``, SLURM), else 0. Lightning is not imported for this: where it
    is not loaded, no strategy has set a rank (and a command that does not need it starts seconds
    faster)."""
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    rank = getattr(getattr(rank_zero, "rank_zero_only", None), "rank", None)
    if rank is not None:
        return int(rank)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


class RankZeroFilter(logging.Filter):
    """Lets records through on the process of rank zero only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return process_rank() == 0


class _CommandHandler(logging.StreamHandler):
    """The command's handler: messages as plain lines on stdout, warnings and errors on stderr prefixed
    with their level (the streams in use when it was installed)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.out, self.err = sys.stdout, sys.stderr

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self.out if record.levelno < logging.WARNING else self.err
        super().emit(record)


def configure_logging(debug: bool = False) -> logging.Logger:
    """Install (or replace) the command-line handler on the ``densevision`` logger: INFO and above, or
    DEBUG with ``debug``, on rank zero only."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _CommandHandler)]:
        logger.removeHandler(handler)
    handler = _CommandHandler()
    handler.addFilter(RankZeroFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    return logger
