"""Safe loading of local weight files and strict state-dict loading with readable errors.

Nothing here downloads: weights come from files the user passes. Every file is read with
``torch.load(weights_only=True)``, so a crafted pickle cannot run code.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

_NESTED_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")


class WeightsError(ValueError):
    """A weights or checkpoint file cannot be used for the model it was given to."""


def safe_load(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what to do.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsError: the file is not a PyTorch file, or holds objects that ``weights_only=True`` refuses
            (loading them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain "
            f"containers, and loading it could run code (weights_only=True). Re-save only the "
            f"state dict (torch.save(model.state_dict(), path)). Details: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # torch.load raises many types (IndexError, RuntimeError...) on junk
        raise WeightsError(f"{path}: not a PyTorch checkpoint or state dict ({err})") from err


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` without executing code (see ``safe_load``).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model`` /
    ``model_state_dict`` (Lightning and common training-script checkpoints).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsError: see ``safe_load``; or the file holds no state dict.
    """
    return _unwrap_state_dict(safe_load(path), Path(path))


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise WeightsError(
            f"{path}: holds no state dict (expected a mapping of parameter names to tensors, or one "
            f"under {list(_NESTED_STATE_DICT_KEYS)}); got {type(obj).__name__}"
        )
    return dict(obj)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    """``model.load_state_dict(strict=True)`` with an error that names every bad key.

    Raises:
        WeightsError: keys are missing or unexpected, or a tensor's shape differs from the model's.
    """
    expected = model.state_dict()
    state_dict = _reconcile_batch_counters(state_dict, expected)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_preview(mismatched)}")
    if problems:
        raise WeightsError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that the file was saved from the same architecture and options."
        )
    model.load_state_dict(state_dict, strict=True)


def _reconcile_batch_counters(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """BatchNorm's ``num_batches_tracked`` counter is bookkeeping, not weights: files saved before it
    existed (old torchvision DenseNets) lack it, and ``FrozenBatchNorm2d`` has none. Keep the model's own
    counter where the file has none and drop the file's where the model has none."""
    counter = "num_batches_tracked"
    reconciled = {k: v for k, v in state_dict.items() if not k.endswith(counter) or k in expected}
    for key, value in expected.items():
        if key.endswith(counter) and key not in reconciled:
            reconciled[key] = value
    return reconciled


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
