"""Lightning callbacks every densevision task uses."""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


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
