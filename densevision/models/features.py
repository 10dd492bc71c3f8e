"""The feature contract between backbones and heads.

A backbone's ``forward`` returns an ordered ``dict[str, Tensor]``, high resolution first, whose keys name
the stride: ``c0`` (stride 1), ``c1`` (2), ``c2`` (4), ``c3`` (8), ``c4`` (16), ``c5`` (32). Its
``feature_info`` lists the same names with their channels and strides, so that consumers can build
themselves in ``__init__`` without a forward pass. A dilated backbone (``output_stride`` 16 or 8) keeps
its stage names, so ``c4`` and ``c5`` may then have stride 8 or 16: consumers read strides from
``feature_info``, never from the names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSpec:
    """One feature map a backbone returns.

    Attributes:
        name: key in the feature dict, ``c{log2(stride)}`` of the undilated network (the stage's name).
        channels: number of channels C of the ``(N, C, H / stride, W / stride)`` tensor.
        stride: total downsampling factor relative to the input.
    """

    name: str
    channels: int
    stride: int


def feature_name(stride: int) -> str:
    """The contract's key for a feature map of the given stride (a power of two)."""
    level = math.log2(stride)
    if stride < 1 or level != int(level):
        raise ValueError(f"feature stride must be a power of two >= 1, got {stride}")
    return f"c{int(level)}"


def select_features(
    available: Sequence[FeatureSpec], names: Iterable[str] | None
) -> tuple[FeatureSpec, ...]:
    """The specs named by ``names`` in high-to-low resolution order (all of them when ``names`` is None).

    Raises:
        ValueError: a name is not among ``available``, or no name is given.
    """
    if names is None:
        return tuple(available)
    wanted = list(names)
    known = [spec.name for spec in available]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown feature name(s) {unknown}; this backbone provides {known}")
    if not wanted:
        raise ValueError(f"out_features is empty; choose one or more of {known}")
    return tuple(spec for spec in available if spec.name in wanted)


def check_backbone_input(backbone: object, x: object) -> None:
    """Refuse input a backbone cannot take: not (N, backbone.in_chans, H, W), or H / W below its
    ``min_input_size`` (its total stride). One check, one message, for every backbone family."""
    if x.dim() != 4 or x.shape[1] != backbone.in_chans:
        raise ValueError(
            f"{type(backbone).__name__} expects input of shape (N, {backbone.in_chans}, H, W), got "
            f"{tuple(x.shape)}; set in_chans to your image's channel count"
        )
    if x.shape[-2] < backbone.min_input_size or x.shape[-1] < backbone.min_input_size:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is smaller than this network's total stride: H and W must "
            f"be at least {backbone.min_input_size}"
        )
