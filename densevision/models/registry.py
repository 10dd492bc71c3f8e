"""``create_model`` / ``list_models``: named presets, as in timm; and what the presets share: the
``preset`` declaration, building a backbone with its local weights (``build_backbone``) and a family's
by-name builder (``family_preset``)."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)
_MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a preset function under its own name (decorator)."""
    name = builder.__name__
    if name in _MODEL_BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODEL_BUILDERS[name] = builder
    return builder


def preset(
    builder: Callable[..., M], /, *args: object, **fixed: object
) -> Callable[[Callable[..., M]], Callable[..., M]]:
    """Declare and register a preset in two lines: the decorated function states the preset's name, its
    typed keyword arguments (``**options: Unpack[...]``, so that LightningCLI refuses a typo when a config
    is parsed), their defaults, its return type and its docstring; its body is the docstring alone. Called,
    the preset returns ``builder(*args, **fixed, **arguments)``, where ``arguments`` are the caller's
    keywords with the declared defaults filled in.

    Example:
        ``@preset(build_backbone, DenseNet, growth_rate=32, block_config=(6, 12, 24, 16))`` above
        ``def densenet121(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:`` and its docstring.
    """

    def register(declaration: Callable[..., M]) -> Callable[..., M]:
        signature = inspect.signature(declaration)

        # functools.wraps keeps the declaration's name, module, docstring and (through __wrapped__) its
        # signature, which is what create_model, LightningCLI's class_path and the API reference read.
        @functools.wraps(declaration)
        def build(**kwargs: object) -> M:
            bound = signature.bind(**kwargs)
            bound.apply_defaults()
            arguments: dict[str, object] = {}
            for name, value in bound.arguments.items():
                is_options = signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD
                arguments.update(value if is_options else {name: value})
            return builder(*args, **fixed, **arguments)

        return register_model(build)

    return register


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell pattern (``"densenet*"``)."""
    names = sorted(_MODEL_BUILDERS)
    if pattern is not None:
        names = [name for name in names if fnmatch.fnmatch(name, pattern)]
    return names


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its preset function.

    Raises:
        ValueError: the name is not registered (the message suggests close names).
    """
    if name not in _MODEL_BUILDERS:
        close = difflib.get_close_matches(name, list(_MODEL_BUILDERS), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} See densevision.list_models() for the {len(_MODEL_BUILDERS)} "
            "registered names."
        )
    return _MODEL_BUILDERS[name](**kwargs)


def family_preset(pattern: str, name: str, family: str, **kwargs: object) -> nn.Module:
    """The registered preset ``name`` of ``family`` (whose preset names match the shell ``pattern``), built
    with ``kwargs``: what a family's by-name builder (``rdnet("rdnet_tiny")``) runs.

    Raises:
        ValueError: ``name`` is not one of the family's presets (the message lists them).
    """
    names = list_models(pattern)
    if name not in names:
        raise ValueError(f"unknown {family} {name!r}; choose one of {names}")
    return create_model(name, **kwargs)


def build_backbone(cls: Callable[..., M], *, weights: str | Path | None = None, **kwargs: object) -> M:
    """``cls(**kwargs)`` with local ``weights`` loaded strictly by the model's ``load_weights``
    (``densevision.models.features.FeatureBackbone``): every backbone preset's path from ``weights=``."""
    model = cls(**kwargs)
    if weights is not None:
        model.load_weights(weights)
    return model
