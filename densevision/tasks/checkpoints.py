"""Trained checkpoints, loaded without running code from the file.

Every file is read with ``torch.load(weights_only=True)`` (``densevision.models.weights.safe_load``): a
crafted pickle is refused. Two ways in:

- ``load_task(ckpt)`` rebuilds the LightningModule of a ``densevision fit`` run through Lightning's own
  ``load_from_checkpoint``: the tasks save the config LightningCLI gave them (network ``class_path`` and
  arguments, values linked from the data module such as ``num_classes`` and ``class_weights``) as their
  hyper-parameters (``BaseTask.save_config_hyperparameters``). What Lightning does not do is done here:
  every ``class_path`` in those hyper-parameters must lie in ``densevision``, ``torch`` or ``torchvision``
  before anything is imported, and the errors name the file.
- ``load_model_checkpoint(model, ckpt, model_name=...)`` loads a checkpoint (Lightning ``.ckpt`` or a
  plain state dict) into a model built by name; a checkpoint trained with another model or another
  ``num_classes`` is an error naming both.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from densevision.models.weights import WeightsError, load_state_dict_strict, safe_load

TRUSTED_PREFIXES = ("densevision.", "torch.", "torchvision.")


class CheckpointError(WeightsError):
    """A checkpoint cannot be used as asked (wrong model, wrong classes, no run config...)."""


@dataclass
class CheckpointInfo:
    """What a checkpoint file says about itself.

    Attributes:
        path: the file.
        state_dict: the weights, keyed as the bare model's state dict (a Lightning task's ``model.``
            prefix removed).
        hyper_parameters: the task's saved hyper-parameters (empty for a plain state dict).
        model_name: the network's preset or class name (None when unknown).
        num_classes: the trained number of classes (None when unknown).
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    num_classes: int | None = None

    def describe(self) -> str:
        """``'fcdensenet56' (num_classes=11)`` or as much of it as is known."""
        name = repr(self.model_name) if self.model_name else "an unknown model"
        return name + (f" (num_classes={self.num_classes})" if self.num_classes is not None else "")


def read_checkpoint(checkpoint: str | Path) -> CheckpointInfo:
    """Read ``checkpoint`` safely and gather what it says about the model that produced it.

    Args:
        checkpoint: a Lightning ``.ckpt`` of a densevision task, or a plain state-dict file.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: the file is refused by ``weights_only=True`` or is not a checkpoint.
    """
    path = Path(checkpoint)
    obj = safe_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a checkpoint dict or a state dict, got {type(obj).__name__}")
    hparams = dict(obj.get("hyper_parameters") or {})
    raw = obj.get("state_dict", obj)
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(
            f"{path}: holds no state dict (expected tensors under 'state_dict' or at the top level)"
        )
    state = dict(raw)
    if "state_dict" in obj and any(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    network = hparams.get("model")
    network = network if isinstance(network, Mapping) and isinstance(network.get("class_path"), str) else None
    num_classes = hparams.get("num_classes")
    if num_classes is None and network is not None:
        num_classes = (network.get("init_args") or {}).get("num_classes")
    model_name = network["class_path"].rsplit(".", 1)[-1] if network is not None else None
    return CheckpointInfo(path, state, hparams, model_name, num_classes)


def _class_paths(config: object, where: str) -> Iterator[tuple[str, object]]:
    """Every ``class_path`` (and Lightning's ``_class_path``) value nested in ``config``."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key in ("class_path", "_class_path"):
                yield f"{where}.{key}", value
            else:
                yield from _class_paths(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from _class_paths(value, f"{where}[{i}]")


def _check_trusted(class_path: object, where: str) -> str:
    if not isinstance(class_path, str) or not class_path.startswith(TRUSTED_PREFIXES):
        raise CheckpointError(
            f"{where}: class_path {class_path!r} is outside {list(TRUSTED_PREFIXES)}; refusing to import it "
            "(a checkpoint could otherwise run any code). Build the model in Python and use "
            "load_model_checkpoint instead."
        )
    return class_path


def load_task(checkpoint: str | Path, *, map_location: str | torch.device = "cpu") -> LightningModule:
    """Rebuild the trained task (LightningModule, in eval mode) of a ``densevision fit`` run.

    Args:
        checkpoint: ``<run>/checkpoints/*.ckpt``.
        map_location: where the weights go.

    Raises:
        CheckpointError: the checkpoint holds no task config (saved without LightningCLI), names a class
            outside the trusted packages, or its weights do not fit the rebuilt model.
    """
    info = read_checkpoint(checkpoint)
    hparams = info.hyper_parameters
    if "_class_path" not in hparams or "model" not in hparams:
        raise CheckpointError(
            f"{info.path}: holds no task config in its hyper-parameters (it was not written by "
            "`densevision fit`); build the model in Python and load the weights with load_model_checkpoint, "
            "or `densevision export --model NAME --checkpoint FILE`"
        )
    for where, class_path in _class_paths(hparams, f"{info.path} hyper_parameters"):
        _check_trusted(class_path, where)
    module_name, _, name = hparams["_class_path"].rpartition(".")
    task_class = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(task_class, type) and issubclass(task_class, LightningModule)):
        raise CheckpointError(f"{info.path}: task class {hparams['_class_path']} is not a LightningModule")
    try:
        task = task_class.load_from_checkpoint(info.path, map_location=map_location, weights_only=True)
    except RuntimeError as err:  # a state dict that does not fit: Lightning reports it as RuntimeError
        raise CheckpointError(f"{info.path} does not fit the {info.describe()} it describes: {err}") from err
    except Exception as err:  # jsonargparse reports bad configs with several exception types
        raise CheckpointError(f"{info.path}: cannot rebuild {hparams['_class_path']}: {err}") from err
    return task.eval()


def load_model_checkpoint(
    model: nn.Module, checkpoint: str | Path, *, model_name: str, num_classes: int | None = None
) -> CheckpointInfo:
    """Load ``checkpoint``'s weights into ``model`` (built as ``model_name``), strictly.

    Raises:
        CheckpointError: the checkpoint records another model or ``num_classes``, or its weights do not
            fit ``model``; the message names both.
    """
    info = read_checkpoint(checkpoint)
    wanted = f"{model_name!r}" + (f" (num_classes={num_classes})" if num_classes is not None else "")
    other_model = info.model_name is not None and info.model_name != model_name
    other_classes = None not in (num_classes, info.num_classes) and num_classes != info.num_classes
    if other_model or other_classes:
        raise CheckpointError(
            f"{info.path} was trained as {info.describe()}, but the model asked for is {wanted}; "
            f"build {info.model_name or 'the same model'} with num_classes={info.num_classes}"
        )
    try:
        load_state_dict_strict(model, info.state_dict, source=str(info.path))
    except WeightsError as err:
        raise CheckpointError(
            f"{info.path} (trained as {info.describe()}) does not fit the model asked for, {wanted}: {err}"
        ) from err
    return info
