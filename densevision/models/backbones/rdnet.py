"""RDNet backbones (``rdnet_tiny/small/base/large``) as classifiers or multi-scale feature extractors.

Kim, Han, Heo, Yun, Chun, Han, "DenseNets Reloaded: Paradigm Shift Beyond ResNets and ViTs", ECCV 2024.
A DenseNet modernised: a 4x4/4 patchify stem, few wide dense layers per stage with a large growth rate,
each layer a ConvNeXt-style mixer (7x7 depthwise conv, LayerNorm, 1x1 expansion, GELU, 1x1 to the growth
rate, effective SE in later stages, layer scale), LayerNorm-conv transitions that compress the channels by
half (a 2x2/2 conv where the stage downsamples, 1x1 elsewhere).

Feature taps: ``c2``..``c5`` are the raw outputs (the concatenated maps, as timm's ``features_only``
returns them) of the last stage at strides 4, 8, 16 and 32; there is no stride-2 feature (the stem is a
stride-4 patchify conv). rdnet_tiny: c2 256, c3 440, c4 744, c5 1040 channels. The transitions normalise
their input with LayerNorm, so the taps need no extra norm. ``weights=`` loads timm's ``rdnet_*`` state
dicts strictly through ``remap_timm_rdnet_keys``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

from densevision.models.backbones.common import EffectiveSE, LayerNorm2d
from densevision.models.features import (
    BackboneArgs,
    FeatureBackbone,
    FeatureBackboneArgs,
    FeatureSpec,
    feature_name,
)
from densevision.models.registry import build_backbone, family_preset, register_model


class _RDNetLayer(nn.Module):
    """One dense layer: concat -> 7x7 depthwise conv -> LayerNorm -> 1x1 (x ``expansion``) -> GELU -> 1x1
    to ``growth_rate`` -> [effective SE] -> layer scale. Returns only the new maps."""

    def __init__(
        self, in_channels: int, growth_rate: int, expansion: float, ese: bool, ls_init: float
    ) -> None:
        super().__init__()
        hidden = int(in_channels * expansion / 8) * 8
        self.conv_dw = nn.Conv2d(in_channels, in_channels, kernel_size=7, padding=3, groups=in_channels)
        self.norm = LayerNorm2d(in_channels)
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, growth_rate, kernel_size=1)
        self.se = EffectiveSE(growth_rate) if ese else None
        self.gamma = nn.Parameter(torch.full((growth_rate,), ls_init))

    def forward(self, *features: Tensor) -> Tensor:
        """(N, C_i, H, W) maps -> (N, growth_rate, H, W) new maps."""
        x = self.fc2(self.act(self.fc1(self.norm(self.conv_dw(torch.cat(features, 1))))))
        if self.se is not None:
            x = self.se(x)
        return x * self.gamma.reshape(1, -1, 1, 1)


class _Transition(nn.Module):
    """LayerNorm, then a conv compressing the channels: 2x2 stride 2 (downsampling) or 1x1."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        k = 2 if downsample else 1
        self.norm = LayerNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class _RDNetStage(nn.Module):
    def __init__(
        self, transition: _Transition | None, in_channels: int, num_layers: int, growth_rate: int,
        expansion: float, ese: bool, ls_init: float,
    ) -> None:
        super().__init__()
        self.transition = transition
        self.layers = nn.ModuleList(
            _RDNetLayer(in_channels + i * growth_rate, growth_rate, expansion, ese, ls_init)
            for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate


_TIMM_LAYER = re.compile(r"^dense_stages\.(\d+)\.(\d+)\.(.+)$")
_TIMM_MIXER = {"0": "conv_dw", "1": "norm", "2": "fc1", "4": "fc2", "5": "se"}


def remap_timm_rdnet_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's ``RDNet`` keys -> densevision's; densevision keys pass unchanged.

    ``dense_stages.{i}.{0,1}`` (stages after the first: LayerNorm, conv) -> ``stages.{i}.transition.norm /
    conv``; ``dense_stages.{i}.{0 or 2}.dense_block{j}.layers.layers.{k}`` -> ``stages.{i}.layers.{j}.``
    ``conv_dw / norm / fc1 / fc2 / se``; ``...dense_block{j}.gamma`` -> ``stages.{i}.layers.{j}.gamma``;
    ``head.norm`` -> ``head_norm``; ``head.fc`` -> ``classifier``.
    """
    remapped = {}
    for key, value in state_dict.items():
        match = _TIMM_LAYER.match(key)
        if match:
            stage, index, rest = match.groups()
            if stage != "0" and index in ("0", "1"):
                key = f"stages.{stage}.transition.{('norm', 'conv')[int(index)]}.{rest}"
            else:
                layer = re.match(r"^dense_block(\d+)\.(?:layers\.layers\.(\d+)\.)?(.+)$", rest)
                if layer:
                    j, k, param = layer.groups()
                    part = f"{_TIMM_MIXER.get(k, k)}." if k is not None else ""
                    key = f"stages.{stage}.layers.{j}.{part}{param}"
        elif key.startswith("head.norm."):
            key = "head_norm." + key[len("head.norm."):]
        elif key.startswith("head.fc."):
            key = "classifier." + key[len("head.fc."):]
        remapped[key] = value
    return remapped


class RDNet(FeatureBackbone):
    """RDNet classifier or feature extractor built from explicit per-stage arguments.

    Args:
        growth_rates: channels each dense layer of a stage adds, one entry per stage.
        downsample: whether each stage's transition halves the resolution (the first stage has no
            transition: its entry must be False).
        ese: whether each stage's layers end with effective squeeze-excitation.
        layers_per_stage: dense layers in each stage.
        stem_channels: output channels of the 4x4/4 patchify stem.
        expansion: hidden width of a layer's 1x1 convs as a multiple of its input channels.
        compression: transition output channels = floor(compression * input / 8) * 8.
        ls_init: initial layer-scale value.
        drop_rate: dropout before the classifier.
        num_classes, in_chans, features_only, out_features, memory_efficient: see ``FeatureBackbone``.

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes) or {``c2``: (N, C2, ~H/4, ~W/4), ...}.
    """

    remap_weight_keys = staticmethod(remap_timm_rdnet_keys)
    first_conv = "stem.0.weight"
    weights_hint = (
        "torch.save(timm.create_model('rdnet_tiny', pretrained=True).state_dict(), 'rdnet_tiny.pth'), then "
        "pass weights='rdnet_tiny.pth'"
    )

    def __init__(
        self,
        *,
        growth_rates: Sequence[int],
        downsample: Sequence[bool],
        ese: Sequence[bool],
        layers_per_stage: int = 3,
        stem_channels: int = 64,
        expansion: float = 4.0,
        compression: float = 0.5,
        ls_init: float = 1e-6,
        drop_rate: float = 0.0,
        **common: Unpack[FeatureBackboneArgs],
    ) -> None:
        super().__init__(**common)
        if not growth_rates or not len(growth_rates) == len(downsample) == len(ese) or downsample[0]:
            raise ValueError(
                f"growth_rates, downsample and ese need one entry per stage and the first stage cannot "
                f"downsample; got {len(growth_rates)}, {len(downsample)}, {len(ese)} entries, "
                f"downsample={tuple(downsample)}"
            )
        self.stem = nn.Sequential(nn.Conv2d(self.in_chans, stem_channels, kernel_size=4, stride=4),
                                  LayerNorm2d(stem_channels))
        self.stages = nn.ModuleList()
        specs: list[FeatureSpec] = []
        self._tap_after: dict[int, str] = {}
        channels, stride = stem_channels, 4
        for i, growth in enumerate(growth_rates):
            transition = None
            if i > 0:
                out = int(channels * compression / 8) * 8
                transition = _Transition(channels, out, downsample[i])
                channels, stride = out, stride * (2 if downsample[i] else 1)
            stage = _RDNetStage(transition, channels, layers_per_stage, growth, expansion, ese[i], ls_init)
            self.stages.append(stage)
            channels = stage.out_channels
            if i == len(growth_rates) - 1 or downsample[i + 1]:
                specs.append(FeatureSpec(feature_name(stride), channels, stride))
                self._tap_after[i] = specs[-1].name
        self._set_features(specs)
        # timm's head order: pool -> LayerNorm -> dropout -> linear (the RDNet weights' order).
        self.head_norm = None if self.features_only else nn.LayerNorm(channels, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(channels, self.num_classes) if self.num_classes > 0 else None
        self._init_weights()

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> {name: (N, C, ~H / stride, ~W / stride)} for the selected features."""
        self._check_input(x)
        x = self.stem(x)
        out: dict[str, Tensor] = {}
        for i, stage in enumerate(self.stages):
            if stage.transition is not None:
                x = stage.transition(x)
            features = [x]
            for layer in stage.layers:
                features.append(self._block(layer, *features))
            x = torch.cat(features, 1)
            if self._tap(out, self._tap_after.get(i), x):
                break
        return out

    def stage_groups(self) -> list[list[nn.Module]]:
        groups = self._group_stages([self.stem], self.stages, self._tap_after)
        if self.head_norm is not None:
            groups[-1].append(self.head_norm)
        return groups


class RDNetArgs(BackboneArgs, total=False):
    """``BackboneArgs`` and ``drop_rate``: dropout before the classifier."""

    drop_rate: float


def rdnet(name: str, **kwargs: Unpack[RDNetArgs]) -> RDNet:
    """An RDNet preset by name (``rdnet_tiny`` ...), with optional local timm-format weights."""
    return family_preset("rdnet_*", name, "RDNet", **kwargs)


def _create_rdnet(
    stem_channels: int, growth_rates: tuple[int, ...], downsample_at: tuple[int, ...], **kwargs: object
) -> RDNet:
    """timm's RDNets: 3 layers per stage, the stages in ``downsample_at`` halve the resolution, effective
    SE from the third stage on."""
    stages = range(len(growth_rates))
    return build_backbone(
        RDNet, stem_channels=stem_channels, growth_rates=growth_rates,
        downsample=[i in downsample_at for i in stages], ese=[i >= 2 for i in stages], **kwargs,
    )


@register_model
def rdnet_tiny(**kwargs: Unpack[RDNetArgs]) -> RDNet:
    """RDNet-T: 7 stages; 23,863,008 parameters with 1000 classes (= timm)."""
    return _create_rdnet(64, (64, 104, 128, 128, 128, 128, 224), downsample_at=(1, 2, 6), **kwargs)


@register_model
def rdnet_small(**kwargs: Unpack[RDNetArgs]) -> RDNet:
    """RDNet-S: 11 stages."""
    return _create_rdnet(72, (64, 128, *(128,) * 7, 240, 240), downsample_at=(1, 2, 9), **kwargs)


@register_model
def rdnet_base(**kwargs: Unpack[RDNetArgs]) -> RDNet:
    """RDNet-B: 11 stages, wider than RDNet-S."""
    return _create_rdnet(120, (96, 128, *(168,) * 7, 336, 336), downsample_at=(1, 2, 9), **kwargs)


@register_model
def rdnet_large(**kwargs: Unpack[RDNetArgs]) -> RDNet:
    """RDNet-L: 12 stages."""
    return _create_rdnet(144, (128, 192, *(256,) * 8, 360, 360), downsample_at=(1, 2, 10), **kwargs)
