"""Learning-rate schedules that follow the run's budget, whatever stops it first.

A cosine schedule over ``max_epochs`` never anneals when ``max_time`` stops the run earlier (a CPU budget
run reaches a machine-dependent number of epochs). ``BudgetCosineSchedule`` sets the learning rate before
every optimizer step from the fraction of the budget spent: elapsed training time over ``max_time`` when
the trainer has one, or steps over the steps ``max_steps`` / ``max_epochs`` allow, whichever is further.
The time comes from Lightning's ``Timer`` callback, whose state is saved in checkpoints, so a resumed run
continues the same curve.
"""

from __future__ import annotations

import math

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer


class BudgetCosineSchedule(Callback):
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x the optimizer's lr over the run's budget.

    Args:
        warmup_steps: optimizer steps of linear warmup from ``warmup_start_ratio`` x lr.
        warmup_start_ratio: first step's lr as a fraction of the configured lr.
        min_lr_ratio: lr at the end of the budget as a fraction of the configured lr.
    """

    def __init__(
        self, warmup_steps: int = 0, warmup_start_ratio: float = 0.1, min_lr_ratio: float = 0.01
    ) -> None:
        super().__init__()
        if warmup_steps < 0 or not 0 <= min_lr_ratio <= 1 or not 0 < warmup_start_ratio <= 1:
            raise ValueError(
                f"BudgetCosineSchedule: got warmup_steps={warmup_steps}, warmup_start_ratio="
                f"{warmup_start_ratio}, min_lr_ratio={min_lr_ratio}; expected warmup_steps >= 0, "
                "0 < warmup_start_ratio <= 1 and 0 <= min_lr_ratio <= 1"
            )
        self.warmup_steps = warmup_steps
        self.warmup_start_ratio = warmup_start_ratio
        self.min_lr_ratio = min_lr_ratio
        self._base_lrs: list[list[float]] | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._base_lrs = [
            [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
            for optimizer in trainer.optimizers
        ]
        for optimizer, lrs in zip(trainer.optimizers, self._base_lrs, strict=True):
            for group, lr in zip(optimizer.param_groups, lrs, strict=True):
                group["initial_lr"] = lr

    def budget_spent(self, trainer: Trainer) -> float:
        """Fraction in [0, 1] of the run's budget used so far."""
        spent = 0.0
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = None if timer is None else timer.time_remaining("train")
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            spent = elapsed / max(elapsed + remaining, 1e-9)
        total_steps = trainer.estimated_stepping_batches
        if math.isfinite(total_steps) and total_steps > 0:
            spent = max(spent, trainer.global_step / total_steps)
        return min(spent, 1.0)

    def factor(self, step: int, spent: float) -> float:
        """The lr multiplier at optimizer step ``step`` with ``spent`` of the budget used."""
        if step < self.warmup_steps:
            return self.warmup_start_ratio + (1 - self.warmup_start_ratio) * step / self.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * spent))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int
    ) -> None:
        if self._base_lrs is None:
            return
        factor = self.factor(trainer.global_step, self.budget_spent(trainer))
        for optimizer, lrs in zip(trainer.optimizers, self._base_lrs, strict=True):
            for group, lr in zip(optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr * factor
        pl_module.log("train/lr", self._base_lrs[0][0] * factor, on_step=True, on_epoch=False)
