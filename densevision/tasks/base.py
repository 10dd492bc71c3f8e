"""What every densevision task shares: an injected model, optimizer and scheduler (LightningCLI style)."""

from __future__ import annotations

import inspect

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn, optim

from densevision.tasks.callbacks import RestoreRngState, SaveOnInterrupt, StopOnNonFiniteLoss
from densevision.tasks.private_apis import config_given_by_cli


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the task's model."""


def describe_state_dict_mismatch(saved: dict, expected: dict, shown: int = 3) -> str:
    """``""`` when ``saved`` has exactly the keys and shapes of ``expected``, else a one-line summary:
    counts of missing, unexpected and differently shaped tensors, with the first few named."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} {tuple(saved[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("shapes differ", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
            parts.append(f"{len(items)} tensor(s) {label} ({', '.join(items[:shown])}{more})")
    return "; ".join(parts)


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

    def save_config_hyperparameters(self) -> None:
        """Save the constructor's arguments as hyper-parameters, so a checkpoint rebuilds its task.

        Under LightningCLI the arguments arrive as the parsed config (``model`` as ``{class_path,
        init_args}``, values linked from the data module included), and ``load_from_checkpoint`` rebuilds the
        whole task from them. Built in Python, the network and the callables are objects that a checkpoint
        cannot hold; they are left out, and such a checkpoint loads into a model built by hand
        (``densevision.tasks.checkpoints.load_model_checkpoint``).
        """
        frame = inspect.currentframe().f_back  # the subclass's __init__, whose arguments are saved
        given = config_given_by_cli()  # what Lightning's save_hyperparameters saves under LightningCLI
        source = given if given is not None else frame.f_locals
        objects = [name for name, value in source.items() if not _is_plain(value)]
        self.save_hyperparameters(ignore=objects, frame=frame)

    def configure_callbacks(self):
        """Callbacks every task needs whatever the config says: stop on a non-finite loss; random
        generators saved in checkpoints and restored on resume; a resumable checkpoint on SIGTERM / SIGINT.

        Those the trainer already holds (from an earlier ``fit`` of the same trainer, as the demo's
        ``validate`` after ``fit``) are kept, not replaced, so Lightning has nothing to override."""
        held = {type(c) for c in self.trainer.callbacks}
        needed = (StopOnNonFiniteLoss, RestoreRngState, SaveOnInterrupt)
        return [callback() for callback in needed if callback not in held]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuses a checkpoint of another model in a few lines before Lightning's strict load would print
        every mismatched tensor."""
        problem = describe_state_dict_mismatch(checkpoint.get("state_dict", {}), self.state_dict())
        if problem:
            path = self.trainer.ckpt_path if self._trainer is not None else None
            where = f" {path}" if path else ""
            raise CheckpointMismatchError(
                f"checkpoint{where} does not fit this config's model: {problem}. Was it trained with another "
                "config (another model, depth or num_classes)?"
            )

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.model.parameters() if p.requires_grad)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _is_plain(value: object) -> bool:
    """Whether ``value`` is YAML-like data (what a config holds), not an object."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False
