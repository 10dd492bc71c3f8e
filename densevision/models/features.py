"""The feature contract between backbones and heads.

A backbone's ``forward`` returns an ordered ``dict[str, Tensor]``, high resolution first, whose keys name
the stride: ``c0`` (stride 1), ``c1`` (2), ``c2`` (4), ``c3`` (8), ``c4`` (16), ``c5`` (32). Its
``feature_info`` lists the same names with their channels and strides, so that consumers can build
themselves in ``__init__`` without a forward pass. A dilated backbone (``output_stride`` 16 or 8) keeps
its stage names, so ``c4`` and ``c5`` may then have stride 8 or 16: consumers read strides from
``feature_info``, never from the names.

``FeatureBackbone`` is the one base every backbone family (DenseNet, RDNet, VoVNet, HarDNet) implements:
the contract's attributes, feature selection with early exit, the classifier head on the last feature,
gradient checkpointing, stage groups for freezing and loading local weights through the family's key
remapping (``densevision.models.weights.load_backbone_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import TypedDict

from densevision.models.layers import checkpoint_block
from densevision.models.weights import KeyRemap, load_backbone_weights


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


class FeatureBackboneArgs(TypedDict, total=False):
    """The keyword arguments of ``FeatureBackbone``, which every family's constructor takes as
    ``**common: Unpack[FeatureBackboneArgs]`` and passes on (defaults there).

    Attributes:
        num_classes: classifier outputs; 0 = no classifier (``forward`` returns pooled features).
        in_chans: input image channels (pretrained first-conv weights are adapted).
        features_only: ``forward`` returns the feature dict; no classifier is built.
        out_features: names of the features to return (default: all); later stages are not run.
        memory_efficient: recompute each block in backward instead of storing its activations.
    """

    num_classes: int
    in_chans: int
    features_only: bool
    out_features: Sequence[str] | None
    memory_efficient: bool


class BackboneArgs(FeatureBackboneArgs, total=False):
    """Keyword arguments every registered backbone preset takes (``**kwargs: Unpack[...]``, so a YAML typo
    still fails when parsed): ``FeatureBackboneArgs`` and ``weights``; the family's class gives the
    defaults.

    Attributes:
        weights: local state-dict file loaded strictly (default None: random initialisation).
    """

    weights: str | Path | None


class FeatureBackbone(nn.Module):
    """Base of every backbone family: the feature contract of this module.

    A subclass calls ``super().__init__(**common)`` first, builds its layers, then ``_set_features`` with
    every feature it can tap (high to low resolution), and implements ``forward_features`` (running each
    checkpointable unit through ``_block`` and each tap through ``_tap``) and ``stage_groups``. Its class
    attributes name how its weight files load: ``remap_weight_keys`` (file keys -> its keys),
    ``first_conv`` (key of the first conv's weight) and ``weights_hint`` (how to save such a file).
    The head is global average pooling, then the optional ``head_norm`` and ``head_drop`` modules of the
    subclass, then ``classifier`` (None without classes).

    Args:
        num_classes: classifier outputs; 0 = no classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature dict; no classifier is built.
        out_features: names of the features to return (default: all); later stages are not run (see
            ``_set_features``).
        memory_efficient: initial ``grad_checkpointing``.

    Attributes:
        feature_info: the selected features (the last one is always kept when there is a classifier).
        available_features: every feature the architecture can return.
        num_features: channels of the last feature (the pooled vector's length).
        min_input_size: the smallest H and W the network takes (its total stride).
        grad_checkpointing: recompute each block in backward instead of storing its activations.
    """

    remap_weight_keys: ClassVar[KeyRemap | None] = None
    first_conv: ClassVar[str | None] = None
    weights_hint: ClassVar[str] = "torch.save(model.state_dict(), 'weights.pth') after training it"
    classifier: nn.Module | None

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        features_only: bool = False,
        out_features: Sequence[str] | None = None,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_chans = in_chans
        self.features_only = features_only
        self.num_classes = 0 if features_only else num_classes
        self.grad_checkpointing = memory_efficient
        self._out_features = out_features

    def _set_features(self, specs: Sequence[FeatureSpec]) -> None:
        """Declare every feature the architecture can tap (``specs``) and select the ``out_features``."""
        self.available_features = tuple(specs)
        self.feature_info = select_features(specs, self._out_features)
        if not self.features_only and specs[-1] not in self.feature_info:
            self.feature_info = (*self.feature_info, specs[-1])  # the classifier needs the last stage
        self._wanted = frozenset(spec.name for spec in self.feature_info)
        self._last_wanted = self.feature_info[-1].name
        self.num_features = specs[-1].channels
        self.min_input_size = specs[-1].stride

    def _init_weights(self, mode: Literal["fan_in", "fan_out"] = "fan_in") -> None:
        """He-normal convs (``fan_in`` as torchvision's DenseNet and timm's RDNet, ``fan_out`` as the VoVNet
        and HarDNet references) and zero linear biases; norms keep their (1, 0) defaults."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's name
        for the ``memory_efficient`` option)."""
        self.grad_checkpointing = enable

    def _block(self, module: nn.Module, *inputs: Tensor) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_block(module, module, *inputs)
        return module(*inputs)

    def _tap(self, out: dict[str, Tensor], name: str | None, x: Tensor) -> bool:
        """Store ``x`` as feature ``name`` if it is selected; True once the last selected feature is
        stored, so that the caller skips the later stages."""
        if name not in self._wanted:
            return False
        out[name] = x
        return name == self._last_wanted

    def _check_input(self, x: Tensor) -> None:
        check_backbone_input(self, x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> {name: (N, C, ~H / stride, ~W / stride)} for the selected features."""
        raise NotImplementedError

    def stage_groups(self) -> list[list[nn.Module]]:
        """The modules of each stage, first to last: the stem, then one group per feature stride (used to
        freeze early stages for detection)."""
        raise NotImplementedError

    @staticmethod
    def _group_stages(
        stem: list[nn.Module], stages: Sequence[nn.Module], tapped: Container[int]
    ) -> list[list[nn.Module]]:
        """``stem``, then ``stages`` grouped so that each group ends with a stage whose output is tapped
        (index in ``tapped``); the last group takes the stages after the last tap."""
        groups: list[list[nn.Module]] = [stem, []]
        for i, stage in enumerate(stages):
            groups[-1].append(stage)
            if i in tapped and i != len(stages) - 1:
                groups.append([])
        return groups

    def load_weights(self, weights: str | Path) -> None:
        """Load a local state dict (the family's format or densevision's) into this model, strictly.

        Raises:
            ValueError, FileNotFoundError, WeightsError: see ``load_backbone_weights``.
        """
        remap = type(self).remap_weight_keys
        load_backbone_weights(self, weights, remap=remap, first_conv=self.first_conv, hint=self.weights_hint)

    def pool_features(self, last: Tensor) -> Tensor:
        """(N, num_features, h, w) -> (N, num_features): global average, then the optional head norm and
        dropout."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(last, 1), 1)
        for name in ("head_norm", "head_drop"):
            module = getattr(self, name, None)
            if module is not None:
                pooled = module(pooled)
        return pooled

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits (N, num_classes), pooled features (N, num_features) when ``num_classes == 0``, or the
        feature dict ``{name: (N, C, ~H / stride, ~W / stride)}`` when ``features_only``."""
        feats = self.forward_features(x)
        if self.features_only:
            return feats
        pooled = self.pool_features(feats[self.available_features[-1].name])
        return self.classifier(pooled) if self.classifier is not None else pooled
