"""DenseNet backbones: ImageNet (121/161/169/201/264), CIFAR (DenseNet, DenseNet-BC) and the FC-DenseNet
down path, as classifiers or multi-scale feature extractors.

Huang et al., "Densely Connected Convolutional Networks", CVPR 2017; Jégou et al., "The One Hundred Layers
Tiramisu", CVPRW 2017. Module names match torchvision's ``DenseNet`` so its state dicts load strictly.

Feature taps (see ``densevision.models.features``), ImageNet stem:
``c1`` = stem conv-BN-ReLU (stride 2); ``c2``..``c4`` = each dense block's output after the following
transition's BN-ReLU; ``c5`` = the last block after ``norm5`` + ReLU. 3x3 stems (CIFAR, FC-DenseNet) are
not tapped: their first block is ``c0`` (``c1`` with ``stem_stride=2``). With ``feature_norm=False`` the
block outputs are returned raw (FC-DenseNet's skip connections).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import TypedDict, Unpack

from densevision.models.features import (
    BackboneArgs,
    FeatureBackbone,
    FeatureBackboneArgs,
    FeatureSpec,
    feature_name,
)
from densevision.models.layers import DenseBlock, DenseLayer, NormLayer, Transition
from densevision.models.registry import build_backbone, family_preset, preset

StemKind = Literal["imagenet", "cifar", "fcdensenet"]
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _build_stem(
    kind: StemKind, in_chans: int, channels: int, norm_layer: NormLayer, stride: int = 1
) -> OrderedDict:
    if kind == "imagenet":
        return OrderedDict(
            conv0=nn.Conv2d(in_chans, channels, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=norm_layer(channels),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    if kind in ("cifar", "fcdensenet"):
        conv0 = nn.Conv2d(in_chans, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        return OrderedDict(conv0=conv0)
    raise ValueError(f"stem must be 'imagenet', 'cifar' or 'fcdensenet', got {kind!r}")


def remap_torchvision_densenet_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename old-style torchvision keys (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``)."""
    remapped = {}
    for key, value in state_dict.items():
        match = _LEGACY_KEY.match(key)
        remapped[match.group(1) + match.group(2) if match else key] = value
    return remapped


class DenseNet(FeatureBackbone):
    """DenseNet classifier or feature extractor built from explicit architecture arguments.

    Args:
        growth_rate: channels k each dense layer adds.
        block_config: number of layers in each dense block.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool), ``"cifar"`` or ``"fcdensenet"`` (3x3 conv).
        stem_channels: output channels of the stem conv.
        stem_stride: stride of the 3x3 stem conv of the ``"cifar"`` and ``"fcdensenet"`` stems (1 or 2; 2
            halves every feature map and the compute of the first block). The ImageNet stem's is fixed.
        bn_size: bottleneck width as a multiple of k; 0 = no bottleneck (plain DenseNet, FC-DenseNet).
        compression: transition output channels = floor(compression * input channels).
        drop_rate: dropout after each dense layer's 3x3 conv and each transition conv.
        transition_pool: ``"avg"`` (DenseNet) or ``"max"`` (FC-DenseNet).
        final_norm: end with BN-ReLU (``norm5``) after the last block.
        num_classes, in_chans, features_only, out_features, memory_efficient: see ``FeatureBackbone``.
        feature_norm: tap features after the transition's BN-ReLU (True) or raw block outputs (False).
        norm_layer: normalisation layer factory, e.g. ``torchvision.ops.FrozenBatchNorm2d``.
        output_stride: stride of the last block (None = the network's own: 32 for the ImageNet stem).
            A smaller power of two (16, 8 for ImageNet DenseNets) keeps the later transitions' BN-ReLU
            and 1x1 conv but replaces their pooling by ``nn.Identity``, and dilates the 3x3 convs of the
            blocks after them by the stride they lost (DenseASPP, DeepLab): the same parameters, so
            torchvision state dicts still load strictly, on feature maps 2x / 4x larger. Features keep
            their stage names (``c4``, ``c5``); ``feature_info`` states their real strides.
    """

    remap_weight_keys = staticmethod(remap_torchvision_densenet_keys)
    first_conv = "features.conv0.weight"
    weights_hint = (
        "torch.save(torchvision.models.densenet121(weights='DEFAULT').state_dict(), 'densenet121.pth'), "
        "then pass weights='densenet121.pth'"
    )

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        stem: StemKind = "imagenet",
        stem_channels: int = 64,
        stem_stride: int = 1,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        transition_pool: Literal["avg", "max"] = "avg",
        final_norm: bool = True,
        feature_norm: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
        output_stride: int | None = None,
        **common: Unpack[FeatureBackboneArgs],
    ) -> None:
        super().__init__(**common)
        _check_architecture(growth_rate, block_config, compression)
        if stem_stride not in (1, 2) or (stem == "imagenet" and stem_stride != 1):
            raise ValueError(
                f"stem_stride must be 1 or 2 (and 1 for the ImageNet stem, whose stride is fixed), got "
                f"{stem_stride} with stem={stem!r}"
            )
        self.stem = stem
        self.feature_norm = feature_norm
        self.final_norm = final_norm
        self.fast_path = True  # CPU input goes channels-last for the fused blocks; see set_fast_path

        memory_efficient = self.grad_checkpointing  # the option, which every layer and transition keeps
        stem_layers = _build_stem(stem, self.in_chans, stem_channels, norm_layer, stem_stride)
        self.features = nn.Sequential(stem_layers)
        specs = [FeatureSpec("c1", stem_channels, 2)] if stem == "imagenet" else []
        first_stride = 4 if stem == "imagenet" else stem_stride
        self.output_stride = _check_output_stride(output_stride, first_stride, len(block_config))
        nominal = stride = first_stride  # nominal: the undilated network's stride, which names the stage
        channels = stem_channels
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient=memory_efficient,
                norm_layer=norm_layer, dilation=nominal // stride,
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            specs.append(FeatureSpec(feature_name(nominal), channels, stride))
            if i < len(block_config) - 1:
                out = int(math.floor(channels * compression))
                trans = Transition(channels, out, transition_pool, drop_rate, norm_layer, memory_efficient)
                if stride * 2 > self.output_stride:
                    trans.pool = nn.Identity()  # no parameters: the state dict is unchanged
                else:
                    stride *= 2
                self.features.add_module(f"transition{i + 1}", trans)
                channels, nominal = out, nominal * 2
        if final_norm:
            self.features.add_module(f"norm{len(block_config) + 1}", norm_layer(channels))
        self._set_features(specs)
        self.classifier = nn.Linear(channels, self.num_classes) if self.num_classes > 0 else None
        self._init_weights()

    def __prepare_scriptable__(self) -> nn.Module:
        raise RuntimeError(
            f"{type(self).__name__} cannot be compiled by torch.jit.script: forward_features picks and taps "
            "its stages with Python control flow (getattr by name, a dict of features). Use torch.jit.trace, "
            "torch.export or torch.fx.symbolic_trace; its DenseBlock and Transition modules script alone."
        )

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> {name: (N, C, ~H / stride, ~W / stride)} for the selected features.

        Stages after the last selected feature are not run.
        """
        if not isinstance(x, torch.fx.Proxy):  # symbolic tracing: no shapes to check, no layout to choose
            self._check_input(x)
            if self.fast_path and x.device.type == "cpu":
                # oneDNN's native layout: no reorder around every conv, and the fused training block's
                # buffers are channels-last. Measured 0.85x the NCHW step time (densenet121, b8, 224^2).
                x = x.contiguous(memory_format=torch.channels_last)
        out: dict[str, Tensor] = {}
        f = self.features
        if self.stem == "imagenet":
            x = f.relu0(f.norm0(f.conv0(x)))
            if self._tap(out, "c1", x):
                return out
            x = f.pool0(x)
        else:
            x = f.conv0(x)
        *inner, last = [spec.name for spec in self.available_features[1 if self.stem == "imagenet" else 0 :]]
        for i, name in enumerate(inner, start=1):
            x = getattr(f, f"denseblock{i}")(x)
            trans: Transition = getattr(f, f"transition{i}")
            if self.feature_norm:
                x = trans.forward_norm(x)
            if self._tap(out, name, x):
                return out
            x = trans.forward_reduce(x) if self.feature_norm else trans(x)
        x = getattr(f, f"denseblock{len(inner) + 1}")(x)
        if self.final_norm:
            x = F.relu(getattr(f, f"norm{len(inner) + 2}")(x))
        self._tap(out, last, x)
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each dense layer's concatenation and each transition in backward instead of storing
        them (the ``memory_efficient`` option, see ``DenseLayer``)."""
        super().set_grad_checkpointing(enable)
        for module in self.modules():
            if isinstance(module, (DenseLayer, Transition)):
                module.memory_efficient = enable

    def stage_groups(self) -> list[list[nn.Module]]:
        """The stem (``conv0``, ``norm0``, ...), then each dense block with the transition that enters it
        (as a ResNet stage begins with its downsampling block); the last group also holds the final norm.
        An ImageNet DenseNet has 5 stages, like the 5 trainable layers of torchvision's ResNets."""
        groups: list[list[nn.Module]] = [[]]
        for name, module in self.features.named_children():
            if name.startswith("transition") or name == "denseblock1":
                groups.append([])
            groups[-1].append(module)
        return [group for group in groups if group]


def _check_architecture(growth_rate: int, block_config: Sequence[int], compression: float) -> None:
    if growth_rate < 1:
        raise ValueError(f"growth_rate must be >= 1, got {growth_rate}")
    if not block_config or any(n < 1 for n in block_config):
        raise ValueError(f"block_config must be non-empty positive layer counts, got {block_config}")
    if not 0 < compression <= 1:
        raise ValueError(f"compression must be in (0, 1], got {compression}")


def _check_output_stride(output_stride: int | None, first_stride: int, num_blocks: int) -> int:
    """The last block's stride: ``output_stride``, or the undilated network's when None."""
    full = first_stride * 2 ** (num_blocks - 1)
    if output_stride is None:
        return full
    allowed = [first_stride * 2**i for i in range(num_blocks)]
    if output_stride not in allowed:
        raise ValueError(
            f"output_stride must be one of {allowed} for this DenseNet (its first block runs at stride "
            f"{first_stride}, its last at {full} without dilation), got {output_stride!r}"
        )
    return output_stride


class DenseNetArgs(BackboneArgs, total=False):
    """``BackboneArgs`` and the DenseNet's own preset options (see ``DenseNet``).

    Attributes:
        drop_rate: dropout after each dense layer's 3x3 conv and each transition conv.
        norm_layer: normalisation layer factory, e.g. ``torchvision.ops.FrozenBatchNorm2d``.
        output_stride: stride of the last block (dilated below the network's own).
    """

    drop_rate: float
    norm_layer: NormLayer
    output_stride: int | None


class DenseNetEncoderArgs(TypedDict, total=False):
    """The ImageNet DenseNet options a segmenter built on one takes (``tiramisu_densenet``,
    ``denseaspp_densenet``, ``deeplabv3plus_densenet`` and their presets) and passes on to
    ``imagenet_densenet``; ``memory_efficient`` and ``norm_layer`` serve the segmenter's own layers too.
    Defaults: ``DenseNet``'s.

    Attributes:
        weights: a local torchvision or densevision ImageNet state dict for the backbone (its classifier is
            dropped); never downloaded.
        in_chans: input image channels (pretrained first-conv weights are adapted).
        memory_efficient: recompute each dense layer's concatenation in backward instead of storing it.
        norm_layer: normalisation layer factory.
    """

    weights: str | Path | None
    in_chans: int
    memory_efficient: bool
    norm_layer: NormLayer


def imagenet_densenet(name: str, **kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """An ImageNet DenseNet preset by name (``densenet121`` ...), with optional local weights (torchvision
    or densevision format); ``output_stride`` 16 or 8 dilates the last blocks (see ``DenseNet``)."""
    return family_preset("densenet[0-9][0-9][0-9]", name, "ImageNet DenseNet", **kwargs)


def cifar_densenet(
    depth: int, growth_rate: int, *, bottleneck: bool, **kwargs: Unpack[DenseNetArgs]
) -> DenseNet:
    """CIFAR DenseNet (``bottleneck=False``) or DenseNet-BC of the given depth, 3 blocks (paper Table 2),
    10 classes unless ``num_classes`` says otherwise; ``output_stride`` 2 or 1 dilates the last blocks."""
    layers_per_block, remainder = divmod(depth - 4, 6 if bottleneck else 3)
    if remainder or layers_per_block < 1:
        kind = "6n+4 for DenseNet-BC" if bottleneck else "3n+4 for DenseNet"
        raise ValueError(f"CIFAR depth must be {kind}, got {depth}")
    return build_backbone(
        DenseNet, growth_rate=growth_rate, block_config=(layers_per_block,) * 3, stem="cifar",
        stem_channels=2 * growth_rate if bottleneck else 16, bn_size=4 if bottleneck else 0,
        compression=0.5 if bottleneck else 1.0, **({"num_classes": 10} | kwargs),
    )


def fcdensenet_encoder(
    growth_rate: int,
    block_config: Sequence[int],
    *,
    stem_channels: int = 48,
    stem_stride: int = 1,
    in_chans: int = 3,
    out_features: Sequence[str] | None = None,
    drop_rate: float = 0.2,
    memory_efficient: bool = False,
    norm_layer: NormLayer = nn.BatchNorm2d,
) -> DenseNet:
    """FC-DenseNet down path: 3x3 stem, plain dense layers, BN-ReLU-1x1 conv-dropout-max-pool transitions
    keeping all channels, raw block outputs as features; the last block is the bottleneck."""
    return DenseNet(
        growth_rate=growth_rate,
        block_config=block_config,
        stem="fcdensenet",
        stem_channels=stem_channels,
        stem_stride=stem_stride,
        bn_size=0,
        compression=1.0,
        drop_rate=drop_rate,
        transition_pool="max",
        final_norm=False,
        in_chans=in_chans,
        features_only=True,
        out_features=out_features,
        feature_norm=False,
        memory_efficient=memory_efficient,
        norm_layer=norm_layer,
    )


@preset(build_backbone, DenseNet, growth_rate=32, block_config=(6, 12, 24, 16))
def densenet121(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet-121 (torchvision's): 7,978,856 parameters with 1000 classes."""


@preset(build_backbone, DenseNet, growth_rate=48, block_config=(6, 12, 36, 24), stem_channels=96)
def densenet161(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet-161 (torchvision's): 28,681,000 parameters."""


@preset(build_backbone, DenseNet, growth_rate=32, block_config=(6, 12, 32, 32))
def densenet169(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet-169 (torchvision's): 14,149,480 parameters."""


@preset(build_backbone, DenseNet, growth_rate=32, block_config=(6, 12, 48, 32))
def densenet201(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet-201 (torchvision's): 20,013,928 parameters."""


@preset(build_backbone, DenseNet, growth_rate=32, block_config=(6, 12, 64, 48))
def densenet264(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """DenseNet-264 (paper Table 1; not in torchvision)."""


@preset(cifar_densenet, 40, 12, bottleneck=False)
def densenet40_k12(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet, L=40, k=12 (paper: 1.0M parameters)."""


@preset(cifar_densenet, 100, 12, bottleneck=False)
def densenet100_k12(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet, L=100, k=12 (paper: 7.0M parameters)."""


@preset(cifar_densenet, 100, 24, bottleneck=False)
def densenet100_k24(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet, L=100, k=24 (paper: 27.2M parameters)."""


@preset(cifar_densenet, 100, 12, bottleneck=True)
def densenet_bc100_k12(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet-BC, L=100, k=12 (paper: 0.8M parameters)."""


@preset(cifar_densenet, 250, 24, bottleneck=True)
def densenet_bc250_k24(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet-BC, L=250, k=24 (paper: 15.3M parameters)."""


@preset(cifar_densenet, 190, 40, bottleneck=True)
def densenet_bc190_k40(**kwargs: Unpack[DenseNetArgs]) -> DenseNet:
    """CIFAR DenseNet-BC, L=190, k=40 (paper: 25.6M parameters)."""
