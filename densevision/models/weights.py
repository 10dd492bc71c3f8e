"""Safe loading of local weight files, strict state-dict loading with readable errors, and the one loader
of pretrained backbone weights (``load_backbone_weights``).

Nothing here downloads: weights come from files the user passes. A ``.safetensors`` file is read with
``safetensors``; every other file with ``torch.load(weights_only=True)``, so a crafted pickle cannot run
code.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

_NESTED_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
# What users type when they expect a download (torchvision's "DEFAULT", timm's pretrained=True).
_DOWNLOAD_NAMES = {"default", "imagenet", "imagenet1k_v1", "pretrained", "true"}

KeyRemap = Callable[[dict[str, Tensor]], dict[str, Tensor]]


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
    """Read a state dict from ``path`` without executing code: a ``.safetensors`` file, or a PyTorch file
    through ``safe_load``.

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model`` /
    ``model_state_dict`` (Lightning and common training-script checkpoints).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsError: see ``safe_load``; or the file holds no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _unwrap_state_dict(safe_load(path), path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:
        raise WeightsError(
            f"{path}: reading .safetensors files needs the safetensors package: pip install safetensors"
        ) from err
    try:
        return load_file(path, device="cpu")
    except SafetensorError as err:
        raise WeightsError(f"{path}: not a valid safetensors file ({err})") from err


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


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt a (O, 3, kh, kw) first-conv weight to ``in_chans`` inputs (as timm does): sum for one
    channel, else repeat the RGB filters and rescale so activations keep their magnitude."""
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_backbone_weights(
    model: nn.Module,
    weights: str | Path,
    *,
    remap: KeyRemap | None = None,
    first_conv: str | None = None,
    hint: str = "torch.save(model.state_dict(), 'weights.pth')",
) -> None:
    """Load a local state dict into a backbone, strictly, after the family's key remapping.

    The first conv's weight is adapted to ``model.in_chans`` (``adapt_input_conv``). A classifier whose
    class count differs from the file's keeps its fresh initialisation (with a warning: fine-tuning on new
    classes); the file's keys under a head module the model was built without (``model.classifier is
    None`` with ``features_only`` or ``num_classes=0``, RDNet's ``head_norm``) are dropped.

    Args:
        model: the backbone (``in_chans``, ``num_classes``, ``classifier`` attributes).
        weights: local file: a state dict (``.pth``, ``.safetensors``) or a checkpoint holding one.
        remap: the family's one key-remapping function, file keys -> model keys (identity on model keys).
        first_conv: model key of the first conv's weight.
        hint: how to save such a file, shown when ``weights`` names a download instead of a file.

    Raises:
        ValueError: ``weights`` names a download instead of a file.
        FileNotFoundError, WeightsError: see ``load_weights_file`` and ``load_state_dict_strict``.
    """
    if isinstance(weights, str) and not Path(weights).exists() and weights.lower() in _DOWNLOAD_NAMES:
        raise ValueError(
            f"weights={weights!r} would need a download, and densevision never downloads. Save the file on "
            f"a machine with internet: {hint}."
        )
    state = load_weights_file(weights)
    if remap is not None:
        state = remap(state)
    if first_conv is not None and first_conv in state:
        state[first_conv] = adapt_input_conv(state[first_conv], model.in_chans)
    state = _keep_fresh_classifier(model, state, str(weights))
    absent = object()
    state = {k: v for k, v in state.items() if getattr(model, k.split(".", 1)[0], absent) is not None}
    load_state_dict_strict(model, state, source=str(weights))


def _keep_fresh_classifier(model: nn.Module, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    classifier = getattr(model, "classifier", None)
    file_weight = state.get("classifier.weight")
    if classifier is None or file_weight is None or file_weight.shape[0] == model.num_classes:
        return state
    warnings.warn(
        f"{source}: classifier has {file_weight.shape[0]} classes, model has {model.num_classes}; the "
        "classifier keeps its fresh initialisation",
        stacklevel=3,
    )
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return state | {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
