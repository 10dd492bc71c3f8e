"""FC-HarDNet semantic segmentation (``fchardnet70``), and the Tiramisu up path on the new backbones.

Chao, Kao, Ruan, Huang, Lin, "HarDNet: A Low Memory Traffic Network", ICCV 2019, Sec. 4.2 (FC-HarDNet).

FC-HarDNet-70: a stride-4 stem of four 3x3 conv-BN-ReLU, five harmonic dense blocks (each followed by a
1x1 conv-BN-ReLU and, except the last, a 2x2 average pool: strides 4..64), then a U-shaped up path: at
each of the four skips (the raw outputs of the first four blocks) bilinear upsampling to the skip's
size, concatenation, a 1x1 conv-BN-ReLU halving the channels and a harmonic dense block; a 1x1
classifier at stride 4 and bilinear upsampling to the input size. The paper: 4.1M parameters (19
Cityscapes classes), 75.9% mIoU on Cityscapes test.

``tiramisu_rdnet_tiny`` / ``tiramisu_vovnet39`` / ``tiramisu_hardnet68``: ``TiramisuSegmenter`` (the
FC-DenseNet up path) on those backbones, read through ``feature_info`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.models.backbones.common import ConvBNReLU
from densevision.models.backbones.hardnet import HarDBlock, hardnet
from densevision.models.backbones.rdnet import rdnet
from densevision.models.backbones.vovnet import vovnet
from densevision.models.features import FeatureSpec, feature_name
from densevision.models.layers import NormLayer
from densevision.models.registry import register_model
from densevision.models.segmentation.base import SegmentationModel, kaiming_init
from densevision.models.segmentation.tiramisu import TiramisuSegmenter

WeightsArg = str | Path | None


class FCHarDNet(SegmentationModel):
    """FC-HarDNet: harmonic dense encoder, U-shaped harmonic dense decoder, 1x1 classifier.

    Args:
        num_classes: output classes C.
        in_chans: input image channels.
        stem_channels: output channels of the four stem convs (the 1st and 3rd have stride 2).
        stage_channels: width of the 1x1 conv after each encoder block.
        growth_rates: k of each encoder block; the decoder block at the same stride reuses it.
        layers: layers of each encoder block; the decoder block at the same stride reuses it.
        multiplier: m of every harmonic block.
        norm_layer: normalisation layer factory.

    Attributes:
        feature_info: the encoder's skips and its deepest feature (``c2`` .. ``c6`` for FC-HarDNet-70).

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes, H, W), for H, W >= ``min_input_size``.
    """

    align_corners = True  # as the reference implementation, whose weights assume it

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int = 3,
        stem_channels: Sequence[int] = (16, 24, 32, 48),
        stage_channels: Sequence[int] = (64, 96, 160, 224, 320),
        growth_rates: Sequence[int] = (10, 16, 18, 24, 32),
        layers: Sequence[int] = (4, 4, 8, 8, 8),
        multiplier: float = 1.7,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(num_classes=num_classes)
        if len(stem_channels) != 4 or not len(stage_channels) == len(growth_rates) == len(layers) >= 2:
            raise ValueError(
                f"FCHarDNet needs 4 stem_channels and >= 2 stages with one stage_channels, growth_rates and "
                f"layers entry each; got {len(stem_channels)}, {len(stage_channels)}, {len(growth_rates)}, "
                f"{len(layers)}"
            )
        conv = dict(norm_layer=norm_layer, activation=nn.ReLU)
        s = stem_channels
        self.stem = nn.Sequential(
            ConvBNReLU(in_chans, s[0], 3, stride=2, **conv), ConvBNReLU(s[0], s[1], 3, **conv),
            ConvBNReLU(s[1], s[2], 3, stride=2, **conv), ConvBNReLU(s[2], s[3], 3, **conv),
        )
        self.down_blocks = nn.ModuleList()
        self.down_convs = nn.ModuleList()
        specs, channels, stride = [], s[3], 4
        for width, growth, n in zip(stage_channels, growth_rates, layers, strict=True):
            block = HarDBlock(channels, growth, multiplier, n, activation=nn.ReLU, norm_layer=norm_layer)
            self.down_blocks.append(block)
            self.down_convs.append(ConvBNReLU(block.out_channels, width, 1, **conv))
            specs.append(FeatureSpec(feature_name(stride), block.out_channels, stride))
            channels, stride = width, stride * 2
        # The deepest feature is the last 1x1 conv's output; the skips are the other blocks' raw outputs.
        specs[-1] = FeatureSpec(specs[-1].name, channels, specs[-1].stride)
        self.feature_info = tuple(specs)
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for skip, growth, n in zip(specs[-2::-1], growth_rates[-2::-1], layers[-2::-1], strict=True):
            reduced = (channels + skip.channels) // 2
            self.up_convs.append(ConvBNReLU(channels + skip.channels, reduced, 1, **conv))
            block = HarDBlock(reduced, growth, multiplier, n, activation=nn.ReLU, norm_layer=norm_layer)
            self.up_blocks.append(block)
            channels = block.out_channels
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        kaiming_init(self, mode="fan_out")
        self.in_chans = in_chans
        self.min_input_size = specs[-1].stride

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> ``feature_info``'s features: each block's raw output (the skips), pooled
        after its 1x1 conv on the way down, and the last 1x1 conv's output (the deepest)."""
        x = self.stem(x)
        features = {}
        pooled = zip(self.feature_info[:-1], self.down_blocks[:-1], self.down_convs[:-1], strict=True)
        for spec, block, conv in pooled:
            x = block(x)
            features[spec.name] = x
            x = F.avg_pool2d(conv(x), 2)
        features[self.feature_info[-1].name] = self.down_convs[-1](self.down_blocks[-1](x))
        return features

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """Up from the deepest feature through every skip: (N, C, ~H / 4, ~W / 4)."""
        names = [spec.name for spec in self.feature_info]
        x = features[names[-1]]
        for conv, block, name in zip(self.up_convs, self.up_blocks, names[-2::-1], strict=True):
            skip = features[name]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = block(conv(torch.cat([x, skip], 1)))
        return x


@register_model
def fchardnet70(
    *, num_classes: int = 19, in_chans: int = 3, norm_layer: NormLayer = nn.BatchNorm2d
) -> FCHarDNet:
    """FC-HarDNet-70: 4,119,257 parameters with 19 classes (paper: 4.1M); 11 for CamVid."""
    return FCHarDNet(num_classes=num_classes, in_chans=in_chans, norm_layer=norm_layer)


class FamilyTiramisuOptions(TypedDict, total=False):
    """The options ``tiramisu_rdnet_tiny`` passes on: the backbone's ``weights`` (a local timm-format file
    for RDNet and VoVNet, densevision-format for HarDNet), ``in_chans`` and ``memory_efficient``, the
    decoder's ``growth_rate`` (16) and ``drop_rate`` (0.2)."""

    weights: WeightsArg
    in_chans: int
    growth_rate: int
    drop_rate: float
    memory_efficient: bool


class FamilyTiramisuNormOptions(FamilyTiramisuOptions, total=False):
    """``FamilyTiramisuOptions`` and the ``norm_layer`` of the backbone and the decoder."""

    norm_layer: NormLayer


def _tiramisu_on(
    family: Callable[..., nn.Module], name: str, *, num_classes: int, weights: WeightsArg = None,
    in_chans: int = 3, growth_rate: int = 16, drop_rate: float = 0.2, memory_efficient: bool = False,
    norm_layer: NormLayer | None = None,
) -> TiramisuSegmenter:  # fmt: skip
    """``TiramisuSegmenter`` on ``family(name, features_only=True)``; ``norm_layer`` None: each one's default
    (RDNet takes none)."""
    norm = {} if norm_layer is None else {"norm_layer": norm_layer}
    body = family(name, weights=weights, in_chans=in_chans, features_only=True,
                  memory_efficient=memory_efficient, **norm)
    return TiramisuSegmenter(backbone=body, num_classes=num_classes, growth_rate=growth_rate,
                             drop_rate=drop_rate, memory_efficient=memory_efficient, **norm)


# Presets: the Tiramisu up path on each family's first member. ``num_classes`` is a parameter of its own
# (the CLI links the data module's into it); the other options are typed keywords (PEP 692), so a typo
# fails when a YAML config is parsed.
@register_model
def tiramisu_rdnet_tiny(
    *, num_classes: int = 11, **options: Unpack[FamilyTiramisuOptions]
) -> TiramisuSegmenter:
    """Tiramisu up path (dense block on c5, up steps through c4..c2, two to full resolution) on RDNet-T."""
    return _tiramisu_on(rdnet, "rdnet_tiny", num_classes=num_classes, **options)


@register_model
def tiramisu_vovnet39(
    *, num_classes: int = 11, **options: Unpack[FamilyTiramisuNormOptions]
) -> TiramisuSegmenter:
    """Tiramisu up path on VoVNet-V2-39 (eSE), skips c4..c1."""
    return _tiramisu_on(vovnet, "vovnet39", num_classes=num_classes, **options)


@register_model
def tiramisu_hardnet68(
    *, num_classes: int = 11, **options: Unpack[FamilyTiramisuNormOptions]
) -> TiramisuSegmenter:
    """Tiramisu up path on HarDNet-68, skips c4..c1."""
    return _tiramisu_on(hardnet, "hardnet68", num_classes=num_classes, **options)
