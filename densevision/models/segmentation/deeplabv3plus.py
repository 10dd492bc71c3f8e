"""DeepLabV3+ on a DenseNet backbone: the ASPP baseline next to DenseASPP.

Chen, Zhu, Papandreou, Schroff, Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic
Image Segmentation" (DeepLabV3+), ECCV 2018.

Encoder: the backbone at output stride 16 (``DenseNet(output_stride=16)``: the last transition does
not pool, block 4 is dilated 2) and torchvision's ``ASPP`` on its deepest feature (a 1x1 branch, three
3x3 atrous branches at rates 6, 12, 18, image pooling; projected to 256 channels, dropout 0.5). Decoder:
the stride-4 low-level feature (``c2``) reduced to 48 channels by 1x1 conv-BN-ReLU, the ASPP output
bilinearly upsampled to its size and concatenated, two 3x3 conv-BN-ReLU of 256 channels, a 1x1
classifier, logits bilinearly resized to the input. The paper's depthwise-separable convolutions
(an Xception detail) are plain convolutions here, as in torchvision's DeepLabV3 head. At output stride 8
the paper doubles the rates (12, 24, 36); the presets do so.

torchvision's ``ASPP`` pools the whole image to 1x1 and normalises that with BatchNorm2d: training needs
more than one image per batch (or per process).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import Conv2dNormActivation
from typing_extensions import Unpack

from densevision.models.backbones.densenet import DenseNetEncoderArgs, imagenet_densenet
from densevision.models.layers import NormLayer
from densevision.models.registry import register_model
from densevision.models.segmentation.base import SegmentationModel, backbone_input, kaiming_init


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ on any backbone with ``feature_info``: ASPP on the deepest feature, a decoder that joins
    one low-level feature.

    Args:
        backbone: returns a feature dict holding ``low_level_feature`` and the deepest feature, described
            in ``feature_info`` (e.g. a densevision ``DenseNet`` with ``features_only=True``,
            ``out_features=["c2", "c5"]`` and ``output_stride=16``).
        num_classes: output classes C.
        low_level_feature: name of the skip feature (the paper's stride 4: ``c2``).
        aspp_rates: the atrous branches' rates (6, 12, 18 at output stride 16).
        aspp_channels: ASPP output channels.
        low_level_channels: channels the skip is reduced to (48: few, so the encoder dominates).
        decoder_channels: channels of the two 3x3 decoder convs.
        norm_layer: normalisation layer factory of the decoder (torchvision's ASPP uses BatchNorm2d).

    Shapes: (N, C_in, H, W) -> logits (N, num_classes, H, W), for any H, W >= ``min_input_size``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        low_level_feature: str = "c2",
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(num_classes=num_classes)
        info = {spec.name: spec for spec in backbone.feature_info}
        deepest = tuple(backbone.feature_info)[-1]
        if low_level_feature not in info or low_level_feature == deepest.name:
            raise ValueError(
                f"low_level_feature {low_level_feature!r} must be one of the backbone's features other than "
                f"the deepest ({deepest.name}); it returns {list(info)}: build it with out_features "
                f"including {low_level_feature!r}"
            )
        self.backbone = backbone
        self.low_level_feature = low_level_feature
        self.deepest = deepest.name
        self.aspp = ASPP(deepest.channels, tuple(aspp_rates), aspp_channels)
        conv = dict(norm_layer=norm_layer)
        self.reduce = Conv2dNormActivation(info[low_level_feature].channels, low_level_channels, 1, **conv)
        self.decoder = nn.Sequential(
            Conv2dNormActivation(aspp_channels + low_level_channels, decoder_channels, 3, **conv),
            Conv2dNormActivation(decoder_channels, decoder_channels, 3, **conv),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)
        kaiming_init(self.aspp, self.reduce, self.decoder, self.classifier)
        self.output_stride = deepest.stride
        self.in_chans, self.min_input_size = backbone_input(backbone)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, C_in, H, W) -> the backbone's features (the low-level one and the deepest)."""
        return self.backbone(x)

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """ASPP on the deepest feature, upsampled to the reduced low-level feature and joined with it:
        (N, decoder_channels, h, w) at the low-level feature's stride."""
        skip = self.reduce(features[self.low_level_feature])
        context = self.aspp(features[self.deepest])
        context = F.interpolate(context, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([context, skip], 1))


def deeplabv3plus_densenet(
    name: str, *, num_classes: int = 11, output_stride: int = 16, **encoder: Unpack[DenseNetEncoderArgs]
) -> DeepLabV3Plus:
    """``DeepLabV3Plus`` on the ImageNet DenseNet ``name``: ``c2`` skip, ASPP rates (6, 12, 18) scaled by
    16 / ``output_stride`` (the paper's rule).

    ``encoder``: the backbone's ``weights``, ``in_chans``, ``memory_efficient`` and ``norm_layer`` (the
    decoder's too; see ``DenseNetEncoderArgs``).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32 for DeepLabV3+, got {output_stride!r}")
    backbone = imagenet_densenet(
        name, features_only=True, out_features=["c2", "c5"], output_stride=output_stride, **encoder
    )
    rates = tuple(max(1, rate * 16 // output_stride) for rate in (6, 12, 18))
    norm_layer = encoder.get("norm_layer", nn.BatchNorm2d)
    return DeepLabV3Plus(backbone=backbone, num_classes=num_classes, aspp_rates=rates, norm_layer=norm_layer)


class DeepLabV3PlusOptions(DenseNetEncoderArgs, total=False):
    """The options a ``deeplabv3plus_densenet*`` preset passes on to ``deeplabv3plus_densenet`` (defaults
    there)."""

    output_stride: int


# Presets: ``num_classes`` is a parameter of its own (the CLI links the data module's into it); the other
# options are typed keywords (PEP 692), so a typo fails when a YAML config is parsed.
@register_model
def deeplabv3plus_densenet121(
    *, num_classes: int = 11, **options: Unpack[DeepLabV3PlusOptions]
) -> DeepLabV3Plus:
    """DeepLabV3+ on DenseNet-121 (output stride 16, ``c2`` skip); 16,193,259 parameters with 11 classes.
    ``weights``: a local ImageNet state dict for the backbone."""
    return deeplabv3plus_densenet("densenet121", num_classes=num_classes, **options)


@register_model
def deeplabv3plus_densenet161(
    *, num_classes: int = 11, **options: Unpack[DeepLabV3PlusOptions]
) -> DeepLabV3Plus:
    """DeepLabV3+ on DenseNet-161 (output stride 16, ``c2`` skip).
    ``weights``: a local ImageNet state dict for the backbone."""
    return deeplabv3plus_densenet("densenet161", num_classes=num_classes, **options)
