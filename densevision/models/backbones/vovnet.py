"""VoVNet-V2 backbones with effective SE (``vovnet39/57/99`` = timm's ``ese_vovnet39b/57b/99b``).

Lee, Hwang, Lee, Bae, Park, "An Energy and GPU-Computation Efficient Backbone Network for Real-Time
Object Detection", CVPRW 2019 (VoVNet); Lee & Park, "CenterMask: Real-Time Anchor-Free Instance
Segmentation", CVPR 2020 (VoVNetV2: identity shortcut, effective SE).

One-shot aggregation (OSA): a module's 3x3 conv-BN-ReLU layers each feed only the next, and their outputs
are concatenated once, at the module's end, with the module's input, then a 1x1 conv aggregates them.
DenseNet concatenates at every layer; OSA keeps its diverse receptive fields at a fraction of the memory
traffic. Every module after a stage's first adds its input back (V2), and each stage's last module
re-weights its channels with effective SE.

Feature taps: ``c1`` = the stem's second conv-BN-ReLU (stride 2, 64 channels); ``c2``..``c5`` = the
outputs of the four OSA stages (strides 4..32; 256 / 512 / 768 / 1024 channels), each ending in BN-ReLU
(and SE): already normalised. Module names are timm's, so ``weights=`` loads timm's state dicts strictly
with one renaming (``remap_timm_vovnet_keys``: ``head.fc`` -> ``classifier``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

from densevision.models.backbones.common import ConvBNReLU, EffectiveSE
from densevision.models.features import BackboneArgs, FeatureBackbone, FeatureBackboneArgs, FeatureSpec
from densevision.models.layers import NormLayer
from densevision.models.registry import build_backbone, family_preset, register_model


class _OSAModule(nn.Module):
    """``num_layers`` chained 3x3 conv-BN-ReLU, one concat with the input, 1x1 aggregation conv-BN-ReLU,
    optional effective SE, optional identity shortcut. (N, in, H, W) -> (N, out, H, W)."""

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, num_layers: int, residual: bool,
        ese: bool, norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv_mid = nn.ModuleList(
            ConvBNReLU(in_channels if i == 0 else mid_channels, mid_channels, 3, norm_layer=norm_layer)
            for i in range(num_layers)
        )
        self.conv_concat = ConvBNReLU(in_channels + num_layers * mid_channels, out_channels, 1,
                                      norm_layer=norm_layer)
        self.attn = EffectiveSE(out_channels) if ese else None

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        for conv in self.conv_mid:
            outputs.append(conv(outputs[-1]))
        out = self.conv_concat(torch.cat(outputs, 1))
        if self.attn is not None:
            out = self.attn(out)
        return out + x if self.residual else out


class _OSAStage(nn.Module):
    """Optional 3x3/2 max-pool (ceil mode, as the reference), then OSA modules; SE on the last one."""

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, num_modules: int, num_layers: int,
        downsample: bool, norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True) if downsample else None
        self.blocks = nn.Sequential(*(
            _OSAModule(
                in_channels if i == 0 else out_channels, mid_channels, out_channels, num_layers,
                residual=i > 0, ese=i == num_modules - 1, norm_layer=norm_layer,
            )
            for i in range(num_modules)
        ))


def remap_timm_vovnet_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's ``VovNet`` keys -> densevision's: only the classifier moves (``head.fc`` -> ``classifier``);
    densevision keys pass unchanged."""
    return {
        ("classifier." + key[len("head.fc."):] if key.startswith("head.fc.") else key): value
        for key, value in state_dict.items()
    }


class VoVNet(FeatureBackbone):
    """VoVNet-V2 classifier or feature extractor.

    Args:
        modules_per_stage: OSA modules in each of the four stages.
        stem_channels: output channels of the three stem convs (3x3/2, 3x3, 3x3/2).
        mid_channels: channels of each stage's chained 3x3 convs.
        out_channels: output channels of each stage.
        layers_per_module: chained 3x3 convs in each OSA module.
        drop_rate: dropout before the classifier.
        num_classes, in_chans, features_only, out_features, memory_efficient: see ``FeatureBackbone``.
        norm_layer: normalisation layer factory, e.g. ``torchvision.ops.FrozenBatchNorm2d``.

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes) or {``c1``: (N, 64, ~H/2, ~W/2), ...,
    ``c5``: (N, 1024, ~H/32, ~W/32)}.
    """

    remap_weight_keys = staticmethod(remap_timm_vovnet_keys)
    first_conv = "stem.0.conv.weight"
    weights_hint = (
        "torch.save(timm.create_model('ese_vovnet39b', pretrained=True).state_dict(), 'vovnet39.pth'), "
        "then pass weights='vovnet39.pth'"
    )

    def __init__(
        self,
        *,
        modules_per_stage: Sequence[int],
        stem_channels: Sequence[int] = (64, 64, 128),
        mid_channels: Sequence[int] = (128, 160, 192, 224),
        out_channels: Sequence[int] = (256, 512, 768, 1024),
        layers_per_module: int = 5,
        drop_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        **common: Unpack[FeatureBackboneArgs],
    ) -> None:
        super().__init__(**common)
        counts = [len(stem_channels), len(modules_per_stage), len(mid_channels), len(out_channels)]
        if counts != [3, 4, 4, 4] or min(modules_per_stage) < 1 or layers_per_module < 1:
            raise ValueError(
                f"VoVNet needs 3 stem_channels and 4 entries (>= 1) of modules_per_stage, mid_channels and "
                f"out_channels, and layers_per_module >= 1; got {counts[0]}, {counts[1]}, {counts[2]}, "
                f"{counts[3]} entries, modules_per_stage={tuple(modules_per_stage)}, "
                f"layers_per_module={layers_per_module}"
            )
        s0, s1, s2 = stem_channels
        self.stem = nn.Sequential(
            ConvBNReLU(self.in_chans, s0, 3, stride=2, norm_layer=norm_layer),
            ConvBNReLU(s0, s1, 3, norm_layer=norm_layer),
            ConvBNReLU(s1, s2, 3, stride=2, norm_layer=norm_layer),
        )
        specs = [FeatureSpec("c1", s1, 2)]
        stages, channels = [], s2
        for i in range(4):
            stages.append(_OSAStage(
                channels, mid_channels[i], out_channels[i], modules_per_stage[i], layers_per_module,
                downsample=i > 0, norm_layer=norm_layer,
            ))
            channels = out_channels[i]
            specs.append(FeatureSpec(f"c{i + 2}", channels, 2 ** (i + 2)))
        self.stages = nn.Sequential(*stages)
        self._set_features(specs)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(channels, self.num_classes) if self.num_classes > 0 else None
        self._init_weights(mode="fan_out")

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> {name: (N, C, ~H / stride, ~W / stride)} for the selected features."""
        self._check_input(x)
        out: dict[str, Tensor] = {}
        x = self.stem[1](self.stem[0](x))
        if self._tap(out, "c1", x):
            return out
        x = self.stem[2](x)
        for i, stage in enumerate(self.stages):
            if stage.pool is not None:
                x = stage.pool(x)
            for block in stage.blocks:
                x = self._block(block, x)
            if self._tap(out, f"c{i + 2}", x):
                break
        return out

    def stage_groups(self) -> list[list[nn.Module]]:
        return [[self.stem], *([stage] for stage in self.stages)]


class VoVNetArgs(BackboneArgs, total=False):
    """``BackboneArgs`` and ``drop_rate`` (dropout before the classifier), ``norm_layer``."""

    drop_rate: float
    norm_layer: NormLayer


def vovnet(name: str, **kwargs: Unpack[VoVNetArgs]) -> VoVNet:
    """A VoVNet-V2 (eSE) preset by name (``vovnet39`` ...), with optional local timm-format weights.

    Weights load into BatchNorm layers; to get ``FrozenBatchNorm2d`` with weights, load first and convert
    (``densevision.models.detection.convert_to_frozen_batchnorm``), as the detectors do.
    """
    return family_preset("vovnet*", name, "VoVNet", **kwargs)


@register_model
def vovnet39(**kwargs: Unpack[VoVNetArgs]) -> VoVNet:
    """VoVNet-V2-39 with eSE (timm ``ese_vovnet39b``); 24,568,936 parameters with 1000 classes."""
    return build_backbone(VoVNet, modules_per_stage=(1, 1, 2, 2), **kwargs)


@register_model
def vovnet57(**kwargs: Unpack[VoVNetArgs]) -> VoVNet:
    """VoVNet-V2-57 with eSE (timm ``ese_vovnet57b``)."""
    return build_backbone(VoVNet, modules_per_stage=(1, 1, 4, 3), **kwargs)


@register_model
def vovnet99(**kwargs: Unpack[VoVNetArgs]) -> VoVNet:
    """VoVNet-V2-99 with eSE (timm ``ese_vovnet99b``)."""
    return build_backbone(VoVNet, modules_per_stage=(1, 3, 9, 3), **kwargs)
