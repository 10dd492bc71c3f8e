"""Trained checkpoints, loaded without running code from the file.

Every file is read with ``torch.load(weights_only=True)`` (``densevision.models.weights.safe_load``): a
crafted pickle is refused. Two ways in:

- ``load_task(ckpt)`` rebuilds the LightningModule of a ``densevision fit`` run from the run's
  ``config.yaml`` (LightningCLI writes it into the run folder; it is searched next to the checkpoint and
  one folder up, as in ``<run>/checkpoints/last.ckpt``) and the checkpoint's ``hyper_parameters``, then
  loads the state dict strictly. Lightning's own ``load_from_checkpoint`` is not enough: tasks keep the
  injected ``model`` out of their hyper-parameters (it is an ``nn.Module``), and values the CLI links from
  the data module (``num_classes``) are not written into ``config.yaml``, so both sources are combined.
  Class paths in the config must lie in ``densevision``, ``torch`` or ``torchvision``.
- ``load_model_checkpoint(model, ckpt, model_name=...)`` loads a checkpoint (Lightning ``.ckpt`` or a
  plain state dict) into a model built by name; a checkpoint trained with another model or another
  ``num_classes`` is an error naming both.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule
from torch import nn

from densevision.models.weights import WeightsError, load_state_dict_strict, safe_load

TRUSTED_PREFIXES = ("densevision.", "torch.", "torchvision.")
# Task constructor arguments that only matter for training; inference keeps the task's defaults.
_TRAINING_ONLY_ARGS = ("optimizer", "lr_scheduler")


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
        run_config: the run's parsed ``config.yaml`` (None when not found).
        model_name: the model's preset or class name from the run config (None when unknown).
        num_classes: the trained number of classes (None when unknown).
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    run_config: dict[str, Any] | None = None
    model_name: str | None = None
    num_classes: int | None = None

    def describe(self) -> str:
        """``'fcdensenet56' (num_classes=11)`` or as much of it as is known."""
        name = repr(self.model_name) if self.model_name else "an unknown model"
        return name + (f" (num_classes={self.num_classes})" if self.num_classes is not None else "")


def find_run_config(checkpoint: str | Path) -> Path | None:
    """The ``config.yaml`` LightningCLI wrote for the run of ``checkpoint``: beside it or one folder up."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def read_checkpoint(checkpoint: str | Path, run_config: str | Path | None = None) -> CheckpointInfo:
    """Read ``checkpoint`` safely and gather what it says about the model that produced it.

    Args:
        checkpoint: a Lightning ``.ckpt`` of a densevision task, or a plain state-dict file.
        run_config: the run's ``config.yaml``; default: found by ``find_run_config``.

    Raises:
        FileNotFoundError: a file does not exist.
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
    if "state_dict" in obj and all(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    config_path = Path(run_config) if run_config is not None else find_run_config(path)
    config = _read_yaml(config_path) if config_path is not None else None
    model_cfg = _model_section(config)
    num_classes = hparams.get("num_classes")
    if num_classes is None and model_cfg is not None:
        num_classes = model_cfg.get("init_args", {}).get("num_classes")
    model_name = model_cfg["class_path"].rsplit(".", 1)[-1] if model_cfg is not None else None
    return CheckpointInfo(path, state, hparams, config, model_name, num_classes)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"run config not found: {path}")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: not a densevision run config (no 'model:' section with a class_path)")
    return config


def _model_section(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The network's ``{class_path, init_args}`` inside the task section, if the config has one."""
    if config is None:
        return None
    model = config["model"].get("init_args", {}).get("model")
    return model if isinstance(model, dict) and "class_path" in model else None


def _check_trusted(class_path: object, where: str) -> str:
    if not isinstance(class_path, str) or not class_path.startswith(TRUSTED_PREFIXES):
        raise CheckpointError(
            f"{where}: class_path {class_path!r} is outside {list(TRUSTED_PREFIXES)}; refusing to import it "
            "(a run config could otherwise run any code). Build the model in Python and use "
            "load_model_checkpoint instead."
        )
    return class_path


def _parameters(class_path: str) -> set[str]:
    """Constructor (or preset function) parameter names of an already trusted ``class_path``."""
    module_name, _, name = class_path.rpartition(".")
    target = getattr(importlib.import_module(module_name), name, None)
    if target is None:
        raise CheckpointError(f"{class_path} does not exist")
    return set(inspect.signature(target.__init__ if isinstance(target, type) else target).parameters)


def load_task(checkpoint: str | Path, run_config: str | Path | None = None) -> LightningModule:
    """Rebuild the trained task (LightningModule, in eval mode, on the CPU) of a ``densevision fit`` run.

    Args:
        checkpoint: ``<run>/checkpoints/*.ckpt``.
        run_config: the run's ``config.yaml``; default: found next to the checkpoint or one folder up.

    Raises:
        CheckpointError: no run config, an untrusted class path, or weights that do not fit the model.
    """
    info = read_checkpoint(checkpoint, run_config)
    if info.run_config is None:
        raise CheckpointError(
            f"{info.path}: no config.yaml found beside it or one folder up; pass the run's config.yaml "
            "(--run-config) so the model can be rebuilt"
        )
    task_cfg = info.run_config["model"]
    where = f"{info.path} run config"
    class_path = _check_trusted(task_cfg.get("class_path"), where)
    init_args = {k: v for k, v in (task_cfg.get("init_args") or {}).items() if k not in _TRAINING_ONLY_ARGS}
    # Values the CLI computed and linked in (from the data module) are in the hyper-parameters only.
    accepted = _parameters(class_path) - {"self", "model", *_TRAINING_ONLY_ARGS}
    init_args.update({k: v for k, v in info.hyper_parameters.items() if k in accepted})
    model_cfg = _model_section(info.run_config)
    if model_cfg is None:
        raise CheckpointError(f"{where}: the task has no model.init_args.model with a class_path")
    takes_classes = "num_classes" in _parameters(_check_trusted(model_cfg["class_path"], where))
    model_args = dict(model_cfg.get("init_args") or {})
    if takes_classes and model_args.get("num_classes") is None and info.num_classes is not None:
        model_args["num_classes"] = info.num_classes
    init_args["model"] = {"class_path": model_cfg["class_path"], "init_args": model_args}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "task", fail_untyped=False)
    try:
        parsed = parser.parse_object({"task": {"class_path": class_path, "init_args": init_args}})
        task = parser.instantiate(parsed).task
    except Exception as err:  # jsonargparse reports bad configs with several exception types
        raise CheckpointError(f"{where}: cannot rebuild {class_path}: {err}") from err
    load_state_dict_strict(task.model, info.state_dict, source=str(info.path))
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
