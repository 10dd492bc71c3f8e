"""DenseASPP: densely connected atrous spatial pyramid pooling on a dilated DenseNet.

Yang, Yu, Zhang, Li, Yang, "DenseASPP for Semantic Segmentation in Street Scenes", CVPR 2018.

The backbone runs at output stride 8 (DenseNet with its last two transitions not pooling, blocks 3 and 4
dilated 2 and 4: ``DenseNet(output_stride=8)``). Its deepest feature is halved in channels by a 1x1
conv + BN + ReLU, then five atrous layers with dilation rates 3, 6, 12, 18, 24 are densely connected:
each sees the reduced feature and every earlier layer's output, so the stack samples the scale axis
densely (chained rates reach a receptive field of 127 feature pixels; one rate-24 layer alone sees 49).
Each layer is BN-ReLU-Conv(1x1, ``mid_channels``)-BN-ReLU-Conv(3x3, dilated, ``growth_rate``)-Dropout2d;
the first layer skips the leading BN-ReLU, its input being normalised already. A dropout + 1x1
classifier on the whole stack gives stride-8 logits, bilinearly resized to the input.

Widths are those of the authors' code (github.com/DeepMotionAIResearch/DenseASPP, ``cfgs/``): DenseNet-121
128 / 64, -169 336 / 168, -201 480 / 240, -161 512 / 128 (``mid_channels`` / ``growth_rate``), dropout 0.1
in the atrous layers and before the classifier. Their reduction is a fifth transition (BN-ReLU-conv)
followed by ``norm5``; here ``norm5`` + ReLU is the backbone's ``c5`` tap, so the reduction is
conv-BN-ReLU in the head: the same layers in the same order, and torchvision weights load into the
backbone unchanged. With 19 classes ``denseaspp_densenet161`` has 35,395,427 parameters, 35,634,083
values with the BatchNorm statistics: 142.5 MB in float32, the size of the authors' DenseNet-161
checkpoint (142.7 MB, as its README lists it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from typing_extensions import TypedDict, Unpack

from densevision.models.backbones.densenet import DenseNetEncoderArgs, imagenet_densenet
from densevision.models.layers import NormLayer
from densevision.models.registry import register_model
from densevision.models.segmentation.base import SegmentationModel, backbone_input, kaiming_init

PAPER_RATES = (3, 6, 12, 18, 24)


class _AtrousLayer(nn.Sequential):
    """[BN-ReLU]-Conv(1x1)-BN-ReLU-Conv(3x3, dilation)-Dropout2d: (N, C_in, h, w) -> (N, k, h, w)."""

    def __init__(
        self, in_channels: int, mid_channels: int, growth_rate: int, dilation: int, drop_rate: float,
        norm_layer: NormLayer, first: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        if not first:
            self.norm1 = norm_layer(in_channels)
            self.relu1 = nn.ReLU(inplace=True)
        # The convs keep their biases, as in the authors' code (their parameter count).
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=1)
        self.norm2 = norm_layer(mid_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid_channels, growth_rate, 3, padding=dilation, dilation=dilation)
        self.drop = nn.Dropout2d(drop_rate)


class DenseASPPHead(nn.Module):
    """The DenseASPP module on one feature map: channel reduction, then densely connected atrous layers.

    Args:
        in_channels: channels of the input feature.
        reduce_channels: channels after the 1x1 reduction; None = half of ``in_channels``.
        mid_channels: width of each atrous layer's 1x1 bottleneck (the paper's d_feature0).
        growth_rate: maps each atrous layer adds (d_feature1).
        rates: dilation rates, in order (the paper's 3, 6, 12, 18, 24 at output stride 8).
        drop_rate: Dropout2d after each atrous layer.
        norm_layer: normalisation layer factory.

    Shapes: (N, in_channels, h, w) -> (N, out_channels, h, w), ``out_channels = reduce_channels +
    len(rates) * growth_rate``: the reduced feature first, then each layer's maps.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        reduce_channels: int | None = None,
        mid_channels: int = 512,
        growth_rate: int = 128,
        rates: Sequence[int] = PAPER_RATES,
        drop_rate: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        rates = tuple(rates)
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"rates must be one or more dilation rates >= 1, got {rates}")
        reduce_channels = in_channels // 2 if reduce_channels is None else reduce_channels
        if min(reduce_channels, mid_channels, growth_rate) < 1:
            raise ValueError(
                f"reduce_channels, mid_channels and growth_rate must be >= 1, got {reduce_channels}, "
                f"{mid_channels}, {growth_rate}"
            )
        self.reduce = Conv2dNormActivation(in_channels, reduce_channels, 1, norm_layer=norm_layer)
        self.layers = nn.ModuleList(
            _AtrousLayer(reduce_channels + i * growth_rate, mid_channels, growth_rate, rate, drop_rate,
                         norm_layer, first=i == 0)
            for i, rate in enumerate(rates)
        )  # fmt: skip
        self.out_channels = reduce_channels + len(rates) * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, h, w) -> (N, out_channels, h, w)."""
        features = [self.reduce(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1) if len(features) > 1 else features[0]))
        return torch.cat(features, 1)


class DenseASPPHeadArgs(TypedDict, total=False):
    """``DenseASPPHead``'s keyword options, which ``DenseASPP`` passes on (defaults there)."""

    reduce_channels: int | None
    mid_channels: int
    growth_rate: int
    rates: Sequence[int]
    drop_rate: float
    norm_layer: NormLayer


class DenseASPP(SegmentationModel):
    """DenseASPP segmentation on any backbone with ``feature_info``: the head on the deepest feature, a
    dropout + 1x1 classifier, logits resized to the input.

    Args:
        backbone: returns a feature dict and describes it in ``feature_info`` (e.g. a densevision
            ``DenseNet`` with ``features_only=True`` and ``output_stride=8``); only the last feature is read.
        num_classes: output classes C.
        classifier_drop_rate: Dropout2d before the classifier.
        head: the head's options (``DenseASPPHeadArgs``: ``reduce_channels``, ``mid_channels``,
            ``growth_rate``, ``rates``, ``drop_rate``, ``norm_layer``; see ``DenseASPPHead``).

    Shapes: (N, C_in, H, W) -> logits (N, num_classes, H, W), for any H, W >= ``min_input_size``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        classifier_drop_rate: float = 0.1,
        **head: Unpack[DenseASPPHeadArgs],
    ) -> None:
        super().__init__(num_classes=num_classes)
        deepest = tuple(backbone.feature_info)[-1]
        self.backbone = backbone
        self.feature = deepest.name
        self.head = DenseASPPHead(deepest.channels, **head)
        self.classifier = nn.Sequential(
            nn.Dropout2d(classifier_drop_rate), nn.Conv2d(self.head.out_channels, num_classes, kernel_size=1)
        )
        kaiming_init(self.head, self.classifier)
        self.output_stride = deepest.stride
        self.in_chans, self.min_input_size = backbone_input(backbone)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, C_in, H, W) -> the backbone's features."""
        return self.backbone(x)

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """The head on the deepest feature: (N, head.out_channels, H / output_stride, W / output_stride)."""
        return self.head(features[self.feature])


# d_feature0 / d_feature1 of the authors' configs (cfgs/DenseASPP*.py)
_WIDTHS = {"densenet121": (128, 64), "densenet161": (512, 128), "densenet169": (336, 168),
           "densenet201": (480, 240)}  # fmt: skip


def denseaspp_densenet(
    name: str,
    *,
    num_classes: int = 11,
    output_stride: int = 8,
    drop_rate: float = 0.1,
    **encoder: Unpack[DenseNetEncoderArgs],
) -> DenseASPP:
    """``DenseASPP`` on the ImageNet DenseNet ``name`` at ``output_stride`` with the authors' widths.

    ``encoder``: the backbone's ``weights``, ``in_chans``, ``memory_efficient`` and ``norm_layer`` (the
    head's too; see ``DenseNetEncoderArgs``). ``drop_rate``: the head's dropouts (the backbone has none,
    as in the paper).
    """
    if name not in _WIDTHS:
        raise ValueError(f"no DenseASPP widths for {name!r}; choose one of {list(_WIDTHS)}")
    backbone = imagenet_densenet(name, features_only=True, out_features=["c5"], output_stride=output_stride,
                                 **encoder)  # fmt: skip
    mid_channels, growth_rate = _WIDTHS[name]
    norm_layer = encoder.get("norm_layer", nn.BatchNorm2d)
    return DenseASPP(
        backbone=backbone, num_classes=num_classes, mid_channels=mid_channels, growth_rate=growth_rate,
        drop_rate=drop_rate, classifier_drop_rate=drop_rate, norm_layer=norm_layer,
    )  # fmt: skip


class DenseASPPOptions(DenseNetEncoderArgs, total=False):
    """The options a ``denseaspp_densenet*`` preset passes on to ``denseaspp_densenet`` (defaults there)."""

    output_stride: int
    drop_rate: float


# Presets: ``num_classes`` is a parameter of its own (the CLI links the data module's into it); the other
# options are typed keywords (PEP 692), so a typo fails when a YAML config is parsed.
@register_model
def denseaspp_densenet121(*, num_classes: int = 11, **options: Unpack[DenseASPPOptions]) -> DenseASPP:
    """DenseASPP on DenseNet-121 (output stride 8; widths 128 / 64); 8,274,187 parameters with 11
    classes. ``weights``: a local ImageNet state dict for the backbone."""
    return denseaspp_densenet("densenet121", num_classes=num_classes, **options)


@register_model
def denseaspp_densenet161(*, num_classes: int = 11, **options: Unpack[DenseASPPOptions]) -> DenseASPP:
    """DenseASPP on DenseNet-161, the paper's model (output stride 8; widths 512 / 128); 35,395,427
    parameters with Cityscapes' 19 classes. ``weights``: a local ImageNet state dict for the backbone."""
    return denseaspp_densenet("densenet161", num_classes=num_classes, **options)


@register_model
def denseaspp_densenet169(*, num_classes: int = 11, **options: Unpack[DenseASPPOptions]) -> DenseASPP:
    """DenseASPP on DenseNet-169 (output stride 8; widths 336 / 168)."""
    return denseaspp_densenet("densenet169", num_classes=num_classes, **options)


@register_model
def denseaspp_densenet201(*, num_classes: int = 11, **options: Unpack[DenseASPPOptions]) -> DenseASPP:
    """DenseASPP on DenseNet-201 (output stride 8; widths 480 / 240)."""
    return denseaspp_densenet("densenet201", num_classes=num_classes, **options)
