"""Lightning callbacks every densevision task uses."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, RichModelSummary
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from densevision.log import get_logger

log = get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(Callback):
    """Stop at the first NaN/inf training loss, before its backward pass and optimizer step.

    The weights are never updated from a non-finite loss and no checkpoint is written after it, so the
    last checkpoint on disk stays the last good one. Under DDP every process stops together (the decision
    is reduced across processes), so none waits forever in a gradient all-reduce.
    """

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
        raise NonFiniteLossError(
            f"training loss became {loss.detach().float().flatten()[0].item()} at epoch "
            f"{trainer.current_epoch}, global step {trainer.global_step}; stopped before updating the "
            f"weights, and {kept}. Try a lower learning rate, gradient clipping "
            "(trainer.gradient_clip_val), or check the data of this batch."
        )


class RestoreRngState(Callback):
    """Saves the random number generators (torch, numpy, Python) in each checkpoint and restores them on
    resume (``--ckpt_path``), so shuffling, augmentation and dropout after a resume draw what an
    uninterrupted run would have drawn. Lightning keeps the optimizer, scheduler and loop state itself.

    Stored as tensors and plain values so ``weights_only=True`` loads them.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "cached": cached},
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def last_checkpoint_path(trainer: Trainer) -> Path:
    """Where ``--ckpt_path last`` looks: ``last.ckpt`` in the first ``ModelCheckpoint``'s folder (once
    set up), else in ``<default_root_dir>/checkpoints``."""
    callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    folder = callback.dirpath if callback is not None and callback.dirpath else None
    folder = Path(folder) if folder else Path(trainer.default_root_dir) / "checkpoints"
    name = callback.CHECKPOINT_NAME_LAST if callback is not None else "last"
    extension = callback.FILE_EXTENSION if callback is not None else ".ckpt"
    return folder / f"{name}{extension}"


class SaveOnInterrupt(Callback):
    """SIGTERM (a cluster's or ``kill``'s stop) and SIGINT (Ctrl+C) during ``fit`` save a resumable
    ``last.ckpt`` before the process exits non-zero, so ``--ckpt_path last`` continues from there.

    Lightning only notices a SIGTERM at the end of an epoch or between validation batches (and then exits
    0 before any checkpoint); here it stops after the current training batch, and ``on_exception``
    writes the checkpoint for both signals. ``densevision.cli`` turns the exit into status 143 (SIGTERM);
    Lightning exits 1 after a KeyboardInterrupt.

    SIGHUP (the terminal closed) is handled as SIGTERM during ``fit``, unless the process started with it
    ignored (``nohup``): then it stays ignored, as asked. Likewise a SIGINT that the process inherited as
    ignored (a job started in the background by a shell without job control, ``cmd &`` in a script) stays
    ignored: such a job is meant to outlive a Ctrl+C typed at the terminal; stop it with SIGTERM
    (``kill PID``), which always saves ``last.ckpt``.
    """

    def __init__(self) -> None:
        self.hung_up = False
        self.interrupted_at: int | None = None
        self._previous_hup = None

    def state_dict(self) -> dict:
        return {"interrupted_at": self.interrupted_at}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("interrupted_at") is not None:
            # The stop message already said what a resume from inside an epoch does; Lightning would repeat
            # it as a warning that the results may be unreliable, right after densevision advised the resume.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        hup = getattr(signal, "SIGHUP", None)
        if stage != "fit" or hup is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(hup) is signal.SIG_DFL:
            self._previous_hup = signal.signal(hup, self._hang_up)

    def _hang_up(self, signum: int, frame) -> None:
        self.hung_up = True
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handling takes it from here

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_hup is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if trainer.state.fn != TrainerFn.FITTING:
            return
        which = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT (KeyboardInterrupt)"
        which = "SIGHUP (handled as SIGTERM)" if self.hung_up else which
        path = last_checkpoint_path(trainer)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                # recorded in the checkpoint, so the resumed run overwrites this file, not last-v1.ckpt
                callback.last_model_path = str(path)
        self.interrupted_at = trainer.global_step
        try:
            trainer.save_checkpoint(path, weights_only=False)
        except Exception as err:  # the stop goes on; say why nothing could be saved
            log.error(f"stopped by {which}; could not save {path}: {err}")
            return
        log.warning(
            f"stopped by {which} at epoch {trainer.current_epoch}, global step {trainer.global_step}: "
            f"saved {path}; resume with --ckpt_path last (it continues inside epoch {trainer.current_epoch}, "
            "whose data it draws anew: close to, not exactly, an uninterrupted run)"
        )



class RunModelSummary(ModelSummary):
    """Lightning's model summary at the start of ``fit``, without FLOPs Lightning did not count.

    Lightning counts FLOPs only for a module with an ``example_input_array`` and otherwise prints a FLOPs
    column of zeros and ``Total FLOPs: 0``. Without a count this summary leaves both out; with one it is
    Lightning's own (rich when ``rich`` is installed, as Lightning's default is).
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        lightning_summary = RichModelSummary if _rich_available() else ModelSummary
        if total_flops:
            lightning_summary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                total_flops, **summarize_kwargs,
            )
            return
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        totals = [
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ]
        if _rich_available():
            _print_rich_summary(columns, totals, summarize_kwargs.get("header_style", "bold magenta"))
        else:
            _log_plain_summary(columns, totals)


def _rich_available() -> bool:
    return importlib.util.find_spec("rich") is not None


Columns = list[tuple[str, list[str]]]


def _rows(columns: Columns) -> list[tuple[str, ...]]:
    return list(zip(*(values for _, values in columns), strict=True))


def _print_rich_summary(columns: Columns, totals: list[tuple[str, str]], header_style: str) -> None:
    from rich import get_console
    from rich.table import Table

    table = Table(header_style=header_style)
    for name, _ in columns:
        if name == " ":
            table.add_column(name, style="dim")
        else:
            table.add_column(name, justify="left" if name in ("Name", "Type", "Mode") else "right")
    for row in _rows(columns):
        table.add_row(*row)
    grid = Table.grid(expand=True)
    grid.add_column()
    for label, value in totals:
        grid.add_row(f"[bold]{label}[/]: {value}")
    console = get_console()
    console.print(table)
    console.print(grid)


def _log_plain_summary(columns: Columns, totals: list[tuple[str, str]]) -> None:
    widths = [max([len(name)] + [len(str(v)) for v in values]) for name, values in columns]
    lines = [" | ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))]
    rule = "-" * (sum(widths) + 3 * len(widths))
    lines.append(rule)
    lines += [" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in _rows(columns)]
    lines.append(rule)
    lines += [f"{value:<10} {label}" for label, value in totals]
    logging.getLogger(ModelSummary.__module__).info("\n" + "\n".join(lines))
