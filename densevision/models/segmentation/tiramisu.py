"""FC-DenseNet ("Tiramisu") semantic segmentation, and the Tiramisu up path on ImageNet DenseNet backbones.

Jégou, Drozdzal, Vazquez, Romero, Bengio, "The One Hundred Layers Tiramisu: Fully Convolutional DenseNets
for Semantic Segmentation", CVPRW 2017.

``FCDenseNet``: the paper's network. Its down path is the FC-DenseNet encoder of the DenseNet backbone
family (``fcdensenet_encoder``), whose last block is the bottleneck; its up path is ``TiramisuDecoder``.
``TiramisuSegmenter``: the same up path on any DenseNet feature extractor (e.g. an ImageNet DenseNet-121
with weights from a local torchvision file), after a dense block on the deepest feature.
Both return logits of the input's size for any H x W at least the network's total stride.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from typing_extensions import TypedDict, Unpack

from densevision.models.backbones.densenet import DenseNetEncoderArgs, fcdensenet_encoder, imagenet_densenet
from densevision.models.layers import DenseBlock, NormLayer
from densevision.models.registry import preset
from densevision.models.segmentation.base import SegmentationModel, backbone_input, kaiming_init
from densevision.models.segmentation.decoder import TiramisuDecoder, num_up_steps


class FCDenseNet(SegmentationModel):
    """FC-DenseNet: DenseNet down path, dense-block bottleneck, Tiramisu up path, 1x1 classifier.

    ``stem_stride=2`` is a CPU-budget option: the 3x3 stem conv gets stride 2, every block runs at half the
    resolution (a quarter of the pixels), one more pooling level's worth of context is seen, and the logits
    are bilinearly upsampled to the input size. Parameters are unchanged. The cost is coarser boundaries
    (measured speed and memory: README, "Segmentation").

    Args:
        num_classes: output classes C.
        in_chans: input image channels.
        growth_rate: channels k each dense layer adds.
        down_blocks: layers of each down-path dense block (each followed by a transition down).
        bottleneck_layers: layers of the bottleneck block at the lowest resolution.
        up_blocks: layers of each up-path block, deep to shallow; None = ``down_blocks`` reversed.
        stem_channels: output channels of the first 3x3 conv.
        drop_rate: dropout after each dense layer and transition down.
        stem_stride: 1 (paper) or 2 (see above).
        memory_efficient: recompute each dense layer's concat-BN-ReLU-conv in backward instead of storing
            it: ``fcdensenet103`` training at 2x3x360x480 needs 4.2 GiB instead of 9.0 GiB, ~25% slower.
        norm_layer: normalisation layer factory.

    Shapes: (N, in_chans, H, W) -> logits (N, num_classes, H, W), for H, W >= ``min_input_size``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int = 3,
        growth_rate: int = 16,
        down_blocks: Sequence[int] = (4, 5, 7, 10, 12),
        bottleneck_layers: int = 15,
        up_blocks: Sequence[int] | None = None,
        stem_channels: int = 48,
        drop_rate: float = 0.2,
        stem_stride: int = 1,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(num_classes=num_classes)
        down_blocks = tuple(down_blocks)
        up_blocks = down_blocks[::-1] if up_blocks is None else tuple(up_blocks)
        if not down_blocks or len(up_blocks) != len(down_blocks):
            raise ValueError(
                f"down_blocks must be non-empty and up_blocks (one per down block) as long; got "
                f"down_blocks={down_blocks}, up_blocks={up_blocks}"
            )
        self.encoder = fcdensenet_encoder(
            growth_rate,
            (*down_blocks, bottleneck_layers),
            stem_channels=stem_channels,
            stem_stride=stem_stride,
            in_chans=in_chans,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
            norm_layer=norm_layer,
        )
        # The bottleneck block's output is its input followed by its new maps; only the new maps go up.
        self.bottleneck_channels = bottleneck_layers * growth_rate
        self.decoder = TiramisuDecoder(
            feature_info=self.encoder.feature_info,
            in_channels=self.bottleneck_channels,
            up_layers=up_blocks,
            growth_rate=growth_rate,
            drop_rate=drop_rate,
            output_stride=stem_stride,
            memory_efficient=memory_efficient,
            norm_layer=norm_layer,
        )
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        kaiming_init(self.decoder, self.classifier)
        self.in_chans = in_chans
        self.min_input_size = self.encoder.min_input_size

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, in_chans, H, W) -> the down path's features, the bottleneck block's output last."""
        return self.encoder(x)

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """The bottleneck's new maps up through every skip: (N, decoder.out_channels, ~H / stem_stride,
        ~W / stem_stride)."""
        deepest = features[self.encoder.feature_info[-1].name]
        return self.decoder(deepest[:, -self.bottleneck_channels :], features, image_size)


class TiramisuSegmenter(SegmentationModel):
    """Tiramisu up path on a DenseNet feature extractor: dense block on the deepest feature, then up steps
    through every shallower feature and on to full resolution, 1x1 classifier.

    Args:
        backbone: returns a feature dict, high to low resolution, at consecutive strides, and describes it
            in ``feature_info`` (a densevision ``DenseNet`` with ``features_only=True``). Its ``in_chans``
            and ``min_input_size``, where present, are checked against the input.
        num_classes: output classes C.
        decoder_layers: dense layers of the block on the deepest feature, then of each up step (deep to
            shallow, ending at full resolution). None = 4 each: 6 entries for an ImageNet DenseNet
            (c5 block; c4, c3, c2, c1 and stride-1 steps).
        growth_rate: channels each decoder dense layer adds.
        drop_rate: dropout after each decoder dense layer.
        memory_efficient: checkpoint each decoder dense layer's concatenation.
        norm_layer: normalisation layer factory of the decoder.

    Shapes: (N, C_in, H, W) -> logits (N, num_classes, H, W).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        decoder_layers: Sequence[int] | None = None,
        growth_rate: int = 16,
        drop_rate: float = 0.2,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(num_classes=num_classes)
        info = tuple(backbone.feature_info)
        num_layers = 1 + num_up_steps(info)
        decoder_layers = (4,) * num_layers if decoder_layers is None else tuple(decoder_layers)
        if len(decoder_layers) != num_layers:
            raise ValueError(
                f"decoder_layers needs {num_layers} entries for this backbone (a block on {info[-1].name}, "
                f"then {num_layers - 1} up steps to full resolution from strides "
                f"{[s.stride for s in info]}), got {decoder_layers}"
            )
        self.backbone = backbone
        self.deepest = info[-1].name
        self.bottleneck = DenseBlock(
            decoder_layers[0], info[-1].channels, growth_rate, 0, drop_rate,
            memory_efficient=memory_efficient, norm_layer=norm_layer,
        )
        self.bottleneck_channels = decoder_layers[0] * growth_rate
        self.decoder = TiramisuDecoder(
            feature_info=info,
            in_channels=self.bottleneck_channels,
            up_layers=decoder_layers[1:],
            growth_rate=growth_rate,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
            norm_layer=norm_layer,
        )
        self.classifier = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        kaiming_init(self.bottleneck, self.decoder, self.classifier)
        self.in_chans, self.min_input_size = backbone_input(backbone)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """(N, C_in, H, W) -> the backbone's features."""
        return self.backbone(x)

    def decode(self, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """A dense block on the deepest feature, then its new maps up through every skip to full
        resolution: (N, decoder.out_channels, H, W)."""
        deepest = self.bottleneck(features[self.deepest])
        return self.decoder(deepest[:, -self.bottleneck_channels :], features, image_size)


def tiramisu_densenet(
    name: str,
    *,
    num_classes: int = 11,
    decoder_layers: Sequence[int] | None = None,
    growth_rate: int = 16,
    drop_rate: float = 0.2,
    **encoder: Unpack[DenseNetEncoderArgs],
) -> TiramisuSegmenter:
    """``TiramisuSegmenter`` on the ImageNet DenseNet ``name`` (``densenet121`` ...); ``encoder``: its
    ``weights``, ``in_chans``, ``memory_efficient`` and ``norm_layer`` (see ``DenseNetEncoderArgs``)."""
    backbone = imagenet_densenet(name, features_only=True, **encoder)
    return TiramisuSegmenter(
        backbone=backbone, num_classes=num_classes, decoder_layers=decoder_layers, growth_rate=growth_rate,
        drop_rate=drop_rate, memory_efficient=encoder.get("memory_efficient", False),
        norm_layer=encoder.get("norm_layer", nn.BatchNorm2d),
    )


class FCDenseNetOptions(TypedDict, total=False):
    """The options an ``fcdensenet*`` preset passes on to ``FCDenseNet`` (defaults there)."""

    in_chans: int
    drop_rate: float
    stem_stride: int
    memory_efficient: bool
    norm_layer: NormLayer


class TiramisuOptions(DenseNetEncoderArgs, total=False):
    """The options a ``tiramisu_densenet*`` preset passes on to ``tiramisu_densenet`` (defaults there)."""

    decoder_layers: Sequence[int] | None
    growth_rate: int
    drop_rate: float


# A public name kept for code that imports it.
TiramisuDenseNetOptions = TiramisuOptions

# Presets: ``num_classes`` is a parameter of its own (the CLI links the data module's into it); the other
# options are typed keywords (PEP 692), so a typo fails when a YAML config is parsed.
@preset(FCDenseNet, growth_rate=12, down_blocks=(4,) * 5, bottleneck_layers=4)
def fcdensenet56(*, num_classes: int = 11, **options: Unpack[FCDenseNetOptions]) -> FCDenseNet:
    """FC-DenseNet56: k=12, 5 down and 5 up blocks of 4 layers, 4-layer bottleneck; 1,375,019 parameters
    with 11 classes (paper: 1.5M)."""


@preset(FCDenseNet, growth_rate=16, down_blocks=(5,) * 5, bottleneck_layers=5)
def fcdensenet67(*, num_classes: int = 11, **options: Unpack[FCDenseNetOptions]) -> FCDenseNet:
    """FC-DenseNet67: k=16, 5 down and 5 up blocks of 5 layers, 5-layer bottleneck; 3,460,475 parameters
    with 11 classes (paper: 3.5M)."""


@preset(FCDenseNet, growth_rate=16, down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15)
def fcdensenet103(*, num_classes: int = 11, **options: Unpack[FCDenseNetOptions]) -> FCDenseNet:
    """FC-DenseNet103: k=16, down (4, 5, 7, 10, 12), 15-layer bottleneck, up (12, 10, 7, 5, 4);
    9,318,075 parameters with 11 classes (paper: 9.4M)."""


@preset(tiramisu_densenet, "densenet121")
def tiramisu_densenet121(*, num_classes: int = 11, **options: Unpack[TiramisuOptions]) -> TiramisuSegmenter:
    """Tiramisu up path on DenseNet-121; ``weights``: a local ImageNet state dict for the backbone."""


@preset(tiramisu_densenet, "densenet161")
def tiramisu_densenet161(*, num_classes: int = 11, **options: Unpack[TiramisuOptions]) -> TiramisuSegmenter:
    """Tiramisu up path on DenseNet-161; ``weights``: a local ImageNet state dict for the backbone."""


@preset(tiramisu_densenet, "densenet169")
def tiramisu_densenet169(*, num_classes: int = 11, **options: Unpack[TiramisuOptions]) -> TiramisuSegmenter:
    """Tiramisu up path on DenseNet-169; ``weights``: a local ImageNet state dict for the backbone."""


@preset(tiramisu_densenet, "densenet201")
def tiramisu_densenet201(*, num_classes: int = 11, **options: Unpack[TiramisuOptions]) -> TiramisuSegmenter:
    """Tiramisu up path on DenseNet-201; ``weights``: a local ImageNet state dict for the backbone."""


@preset(tiramisu_densenet, "densenet264")
def tiramisu_densenet264(*, num_classes: int = 11, **options: Unpack[TiramisuOptions]) -> TiramisuSegmenter:
    """Tiramisu up path on DenseNet-264; ``weights``: a local ImageNet state dict for the backbone."""
