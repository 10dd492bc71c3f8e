"""Feature pyramid over a backbone's feature dict, wrapping ``torchvision.ops.FeaturePyramidNetwork``.

Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017; the P6/P7 levels follow Lin et al.,
"Focal Loss for Dense Object Detection", ICCV 2017.

Input keys follow the backbone contract (``c2``..``c5``, see ``densevision.models.features``); outputs are
keyed by stride the same way with a ``p`` prefix (``p2``..``p7``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from densevision.models.features import FeatureSpec, feature_name

ExtraLevels = Literal["none", "pool", "p6p7"]


def _pyramid_name(stride: int) -> str:
    return "p" + feature_name(stride)[1:]


def _extra_block(
    extra_levels: ExtraLevels, p6p7_source: Literal["p5", "c5"], last: FeatureSpec, out_channels: int
) -> tuple[ExtraFPNBlock | None, int]:
    """torchvision's extra block for ``extra_levels`` and how many levels it adds."""
    if extra_levels == "none":
        return None, 0
    if extra_levels == "pool":
        return LastLevelMaxPool(), 1
    if extra_levels == "p6p7":
        if p6p7_source not in ("p5", "c5"):
            raise ValueError(f"p6p7_source must be 'p5' or 'c5', got {p6p7_source!r}")
        from_c5 = p6p7_source == "c5"
        block = LastLevelP6P7(last.channels if from_c5 else out_channels, out_channels)
        # torchvision picks the source by comparing channel counts; a 256-channel C5 would silently use P5.
        block.use_P5 = not from_c5
        return block, 2
    raise ValueError(f"extra_levels must be 'none', 'pool' or 'p6p7', got {extra_levels!r}")


class FPN(nn.Module):
    """Top-down feature pyramid with optional extra coarse levels, keyed by stride.

    Args:
        in_features: the backbone features to use, high to low resolution (``backbone.feature_info`` or
            a selection of it); their channels size the lateral convs.
        out_channels: channels of every output level.
        extra_levels: ``"pool"`` adds a stride-2 subsampled P6 (Faster/Mask R-CNN), ``"p6p7"`` adds two
            stride-2 3x3 convs (RetinaNet, FCOS), ``"none"`` adds nothing.
        p6p7_source: input of the P6 conv: the last pyramid level (``"p5"``, torchvision's FCOS and
            RetinaNet v2) or the last backbone feature (``"c5"``, the RetinaNet paper).
        norm_layer: optional normalisation inside the FPN convs (torchvision's ``norm_layer``).

    Attributes:
        out_channels: channels of every output map.
        feature_info: ``FeatureSpec`` of each output, e.g. ``p2``..``p6`` for c2..c5 with ``"pool"``.
    """

    def __init__(
        self,
        in_features: Sequence[FeatureSpec],
        *,
        out_channels: int = 256,
        extra_levels: ExtraLevels = "none",
        p6p7_source: Literal["p5", "c5"] = "p5",
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        in_features = tuple(in_features)
        if not in_features:
            raise ValueError("FPN needs at least one input feature; in_features is empty")
        strides = [spec.stride for spec in in_features]
        if strides != sorted(set(strides)):
            raise ValueError(
                f"FPN inputs must be ordered high to low resolution with distinct strides, got "
                f"{[(spec.name, spec.stride) for spec in in_features]}"
            )
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        extra, num_extra = _extra_block(extra_levels, p6p7_source, in_features[-1], out_channels)
        self.fpn = FeaturePyramidNetwork(
            [spec.channels for spec in in_features], out_channels, extra_blocks=extra, norm_layer=norm_layer
        )
        self.in_features = in_features
        self.out_channels = out_channels
        out_strides = strides + [strides[-1] * 2 ** (i + 1) for i in range(num_extra)]
        self.feature_info = tuple(FeatureSpec(_pyramid_name(s), out_channels, s) for s in out_strides)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """{``c*``: (N, C_i, H_i, W_i)} -> {``p*``: (N, out_channels, H_i, W_i)}, high resolution first.

        Extra levels halve the last map's size each (rounded up). Keys not in ``in_features`` are ignored.
        """
        missing = [spec.name for spec in self.in_features if spec.name not in features]
        if missing:
            raise KeyError(f"FPN expects features {missing}; got keys {list(features)}")
        out = self.fpn(OrderedDict((spec.name, features[spec.name]) for spec in self.in_features))
        return OrderedDict(zip((spec.name for spec in self.feature_info), out.values(), strict=True))
