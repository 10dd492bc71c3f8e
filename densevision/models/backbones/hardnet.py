"""HarDNet backbones (``hardnet39ds``, ``hardnet68``, ``hardnet85``) and the harmonic dense block.

Chao, Kao, Ruan, Huang, Lin, "HarDNet: A Low Memory Traffic Network", ICCV 2019.

A harmonic dense block connects layer l to layer l - 2^n for every n with 2^n dividing l (so layer 1
sees the block input, layer 2 the input and layer 1, layer 4 the input and layers 2 and 3...): far fewer
concatenations than DenseNet, whose memory traffic dominates its inference time. A layer with more
inputs gets more channels: k x m^(links - 1), rounded to an even count (m ~ 1.6-1.7). The block returns
the odd layers and the last one, not its input. All layers are conv-BN-ReLU6 (3x3; in the depthwise
"DS" variant, 1x1 conv-BN-ReLU6 then 3x3 depthwise conv-BN). After each block a 1x1 conv-BN-ReLU6 sets
the stage width; 2x2 max-pools (DS: 3x3/2 depthwise conv-BN) downsample.

Feature taps: ``c1`` = the stem's second conv (stride 2); ``c2``..``c5`` = the 1x1 transition output of
the last block at strides 4..32 (conv-BN-ReLU6: normalised). hardnet68: c1 64, c2 128, c3 320, c4 640,
c5 1024 channels. There are no timm weights; ``weights=`` loads densevision-format state dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

from densevision.models.backbones.common import ConvBNReLU
from densevision.models.features import (
    BackboneArgs,
    FeatureBackbone,
    FeatureBackboneArgs,
    FeatureSpec,
    feature_name,
)
from densevision.models.layers import NormLayer
from densevision.models.registry import build_backbone, family_preset, register_model


def harmonic_links(layer: int) -> list[int]:
    """Indices of the earlier outputs layer ``layer`` (1-based; 0 = the block input) concatenates."""
    links, step = [], 1
    while step <= layer:
        if layer % step == 0:
            links.append(layer - step)
        step *= 2
    return links


def harmonic_channels(layer: int, base_channels: int, growth_rate: int, multiplier: float) -> int:
    """Output channels of layer ``layer`` (0 = the block input): k x m^(links - 1), rounded to even."""
    if layer == 0:
        return base_channels
    out = growth_rate * multiplier ** (len(harmonic_links(layer)) - 1)
    return int(int(out + 1) / 2) * 2


class _DepthwiseSeparable(nn.Module):
    """1x1 conv-BN-ReLU6 then 3x3 depthwise conv-BN (HarDNet-DS's layer)."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1, norm_layer=norm_layer, activation=nn.ReLU6)
        self.depthwise = ConvBNReLU(out_channels, out_channels, 3, groups=out_channels, norm_layer=norm_layer,
                                    relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.depthwise(self.pointwise(x))


class HarDBlock(nn.Module):
    """Harmonic dense block: (N, in_channels, H, W) -> (N, out_channels, H, W).

    Args:
        in_channels: channels of the block input.
        growth_rate: k, the channels of a layer with a single link.
        multiplier: m, the channel factor per extra link.
        num_layers: layers in the block.
        depthwise: use the DS layer (1x1 conv + 3x3 depthwise conv) instead of a 3x3 conv.
        activation: the layers' activation (ReLU6 in HarDNet, ReLU in FC-HarDNet).
        norm_layer: normalisation layer factory.

    Attributes:
        out_channels: channels of the output (the odd layers' and the last layer's maps).
    """

    def __init__(
        self, in_channels: int, growth_rate: int, multiplier: float, num_layers: int, *,
        depthwise: bool = False, activation: type[nn.Module] = nn.ReLU6,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if num_layers < 1 or growth_rate < 1:
            raise ValueError(f"HarDBlock needs num_layers >= 1 and growth_rate >= 1, got {num_layers}, "
                             f"{growth_rate}")
        self.links = [harmonic_links(i) for i in range(1, num_layers + 1)]
        channels = [harmonic_channels(i, in_channels, growth_rate, multiplier) for i in range(num_layers + 1)]
        self.layers = nn.ModuleList()
        for i, links in enumerate(self.links, start=1):
            layer_in = sum(channels[j] for j in links)
            if depthwise:
                self.layers.append(_DepthwiseSeparable(layer_in, channels[i], norm_layer))
            else:
                self.layers.append(ConvBNReLU(layer_in, channels[i], 3, norm_layer=norm_layer,
                                              activation=activation))
        self.outputs = [i for i in range(1, num_layers + 1) if i % 2 == 1 or i == num_layers]
        self.out_channels = sum(channels[i] for i in self.outputs)

    def forward(self, x: Tensor) -> Tensor:
        maps = [x]
        for layer, links in zip(self.layers, self.links, strict=True):
            inputs = [maps[j] for j in links]
            maps.append(layer(torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0]))
        return torch.cat([maps[i] for i in self.outputs], 1)


class _HarDStage(nn.Module):
    """HarD block, [dropout], 1x1 transition conv-BN-ReLU6, optional downsampling."""

    def __init__(
        self, block: HarDBlock, out_channels: int, downsample: nn.Module | None, dropout: float,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.block = block
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.transition = ConvBNReLU(block.out_channels, out_channels, 1, norm_layer=norm_layer,
                                     activation=nn.ReLU6)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, out_channels, H, W), before the stage's downsampling."""
        x = self.block(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.transition(x)


@dataclass(frozen=True)
class HarDNetConfig:
    """One HarDNet architecture (the paper's Table / the reference code's lists)."""

    stem_channels: tuple[int, int]
    stage_channels: tuple[int, ...]
    growth_rates: tuple[int, ...]
    layers: tuple[int, ...]
    downsample: tuple[bool, ...]
    multiplier: float = 1.7
    depthwise: bool = False
    last_block_dropout: float = 0.0
    head_dropout: float = 0.1


class HarDNet(FeatureBackbone):
    """HarDNet classifier or feature extractor.

    Args:
        config: the architecture (see ``HarDNetConfig`` and the presets).
        drop_rate: dropout before the classifier; None = the architecture's (0.1, 0.2 for 85, 0.05 DS).
        num_classes: classifier outputs; 0 = no classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature dict; no classifier is built.
        out_features: names of the features to return (default: all); later stages are not run.
        memory_efficient: recompute each HarD block in backward instead of storing its activations.
        norm_layer: normalisation layer factory, e.g. ``torchvision.ops.FrozenBatchNorm2d``.

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes) or {``c1``: (N, C1, ~H/2, ~W/2), ...}.
    """

    first_conv = "stem.0.conv.weight"  # no timm HarDNet: files are densevision's, keys unchanged
    weights_hint = "torch.save(model.state_dict(), 'hardnet68.pth') after training it with densevision"

    def __init__(
        self,
        *,
        config: HarDNetConfig,
        drop_rate: float | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        **common: Unpack[FeatureBackboneArgs],
    ) -> None:
        super().__init__(**common)
        c = config
        if not len(c.stage_channels) == len(c.growth_rates) == len(c.layers) == len(c.downsample):
            raise ValueError(f"HarDNetConfig lists need one entry per stage, got {c}")
        s0, s1 = c.stem_channels
        self.stem = nn.Sequential(
            ConvBNReLU(self.in_chans, s0, 3, stride=2, norm_layer=norm_layer, activation=nn.ReLU6),
            ConvBNReLU(s0, s1, 1 if c.depthwise else 3, norm_layer=norm_layer, activation=nn.ReLU6),
        )
        self.stem_downsample = self._downsample(s1, c.depthwise, norm_layer, stem=True)
        specs = [FeatureSpec("c1", s1, 2)]
        self.stages = nn.ModuleList()
        self._tap_after: dict[int, str] = {}
        channels, stride = s1, 4
        for i, (width, growth, n, down) in enumerate(
            zip(c.stage_channels, c.growth_rates, c.layers, c.downsample, strict=True)
        ):
            block = HarDBlock(channels, growth, c.multiplier, n, depthwise=c.depthwise, norm_layer=norm_layer)
            last = i == len(c.layers) - 1
            downsample = self._downsample(width, c.depthwise, norm_layer) if down else None
            self.stages.append(_HarDStage(
                block, width, downsample, c.last_block_dropout if last else 0.0, norm_layer
            ))
            channels = width
            if down or last:
                specs.append(FeatureSpec(feature_name(stride), channels, stride))
                self._tap_after[i] = specs[-1].name
                stride *= 2
        self._set_features(specs)
        self.head_drop = nn.Dropout(c.head_dropout if drop_rate is None else drop_rate)
        self.classifier = nn.Linear(channels, self.num_classes) if self.num_classes > 0 else None
        self._init_weights(mode="fan_out")

    @staticmethod
    def _downsample(channels: int, depthwise: bool, norm_layer: NormLayer, stem: bool = False) -> nn.Module:
        if depthwise:
            return ConvBNReLU(channels, channels, 3, stride=2, groups=channels, norm_layer=norm_layer,
                              relu=False)
        return nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem else nn.MaxPool2d(2, 2)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> {name: (N, C, ~H / stride, ~W / stride)} for the selected features."""
        self._check_input(x)
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        if self._tap(out, "c1", x):
            return out
        x = self.stem_downsample(x)
        for i, stage in enumerate(self.stages):
            x = self._block(stage, x)
            if self._tap(out, self._tap_after.get(i), x):
                break
            if stage.downsample is not None:
                x = stage.downsample(x)
        return out

    def stage_groups(self) -> list[list[nn.Module]]:
        return self._group_stages([self.stem, self.stem_downsample], self.stages, self._tap_after)


class HarDNetArgs(BackboneArgs, total=False):
    """``BackboneArgs``, ``drop_rate`` (dropout before the classifier; None = the architecture's) and
    ``norm_layer``."""

    drop_rate: float | None
    norm_layer: NormLayer


def hardnet(name: str, **kwargs: Unpack[HarDNetArgs]) -> HarDNet:
    """A HarDNet preset by name (``hardnet68`` ...), with optional local densevision weights."""
    return family_preset("hardnet*", name, "HarDNet", **kwargs)


@register_model
def hardnet39ds(**kwargs: Unpack[HarDNetArgs]) -> HarDNet:
    """HarDNet-39DS (depthwise separable): paper 3.5M parameters with 1000 classes."""
    config = HarDNetConfig(
        stem_channels=(24, 48), stage_channels=(96, 320, 640, 1024), growth_rates=(16, 20, 64, 160),
        layers=(4, 16, 8, 4), downsample=(True, True, True, False), multiplier=1.6, depthwise=True,
        head_dropout=0.05,
    )
    return build_backbone(HarDNet, config=config, **kwargs)


@register_model
def hardnet68(**kwargs: Unpack[HarDNetArgs]) -> HarDNet:
    """HarDNet-68: paper 17.6M parameters with 1000 classes."""
    config = HarDNetConfig(
        stem_channels=(32, 64), stage_channels=(128, 256, 320, 640, 1024), growth_rates=(14, 16, 20, 40, 160),
        layers=(8, 16, 16, 16, 4), downsample=(True, False, True, True, False),
    )
    return build_backbone(HarDNet, config=config, **kwargs)


@register_model
def hardnet85(**kwargs: Unpack[HarDNetArgs]) -> HarDNet:
    """HarDNet-85: paper 36.7M parameters with 1000 classes."""
    config = HarDNetConfig(
        stem_channels=(48, 96), stage_channels=(192, 256, 320, 480, 720, 1280),
        growth_rates=(24, 24, 28, 36, 48, 256), layers=(8, 16, 16, 16, 16, 4),
        downsample=(True, False, True, False, True, False), last_block_dropout=0.1, head_dropout=0.2,
    )
    return build_backbone(HarDNet, config=config, **kwargs)
