"""Lightning callbacks every densevision task uses."""

from __future__ import annotations

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
