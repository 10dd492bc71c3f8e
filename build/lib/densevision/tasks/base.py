"""What every densevision task shares: an injected model, optimizer and scheduler (LightningCLI style)."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn, optim

from densevision.tasks.callbacks import RestoreRngState, StopOnNonFiniteLoss


def default_optimizer(params) -> optim.Optimizer:
    """AdamW, lr 1e-3, weight decay 1e-4."""
    return optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class BaseTask(LightningModule):
    """A LightningModule around ``model`` whose optimizer and scheduler are callables from the config.

    Args:
        model: the network (a plain ``nn.Module``).
        optimizer: ``params -> Optimizer`` (in YAML: ``optimizer: {class_path: torch.optim.RMSprop, ...}``).
        lr_scheduler: ``optimizer -> LRScheduler`` or None; stepped once per epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

    def configure_callbacks(self):
        """Callbacks every task needs whatever the config says: stop on a non-finite loss; random
        generators saved in checkpoints and restored on resume."""
        return [StopOnNonFiniteLoss(), RestoreRngState()]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.model.parameters() if p.requires_grad)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
