"""The Tiramisu up path (Jégou et al., "The One Hundred Layers Tiramisu", CVPRW 2017, Fig. 1).

Each up step: a 3x3 transposed conv (stride 2) on the previous block's *new* maps only, cropped or padded to
the skip's actual size (so any H x W works), concatenated with the skip, then a dense block. Every block
passes only its new maps upward except the last, whose full stack feeds the classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevision.models.features import FeatureSpec
from densevision.models.layers import DenseBlock, NormLayer
from densevision.models.segmentation.base import resize_logits

# resize_logits lives in base.py with the other helpers every segmenter shares; this import path stays.
__all__ = ["TiramisuDecoder", "fit_to_size", "num_up_steps", "resize_logits"]


def fit_to_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """Centre-crop or zero-pad (N, C, h, w) to (N, C, *size).

    A valid 3x3 transposed conv with stride 2 gives 2h + 1 rows; pooling floors odd sizes and padded
    strided convs ceil them, so the skip has 2h, 2h + 1 or (after a ceil) 2h - 1 rows.
    """
    for dim, target in ((2, size[0]), (3, size[1])):
        excess = x.shape[dim] - target
        if excess > 0:
            x = x.narrow(dim, excess // 2, target)
        elif excess < 0:
            before = -excess // 2
            pad = [0, 0, 0, 0]
            pad[(3 - dim) * 2 : (3 - dim) * 2 + 2] = [before, -excess - before]
            x = F.pad(x, pad)
    return x


class _UpStep(nn.Module):
    """Transition up on the previous new maps, fit to the target size, concat the skip, dense block."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        num_layers: int,
        growth_rate: int,
        drop_rate: float,
        memory_efficient: bool,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        # No bias: every output channel is normalised by the next dense layer's BN.
        self.transition_up = nn.ConvTranspose2d(in_channels, in_channels, 3, stride=2, bias=False)
        self.block = DenseBlock(
            num_layers, in_channels + skip_channels, growth_rate, 0, drop_rate,
            memory_efficient=memory_efficient, norm_layer=norm_layer,
        )
        self.new_channels = num_layers * growth_rate
        self.out_channels = self.block.out_channels

    def forward(self, x: Tensor, skip: Tensor | None, size: Sequence[int]) -> Tensor:
        """(N, in_channels, h, w) -> full stack (N, out_channels, *size)."""
        x = fit_to_size(self.transition_up(x), size)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.block(x)


class TiramisuDecoder(nn.Module):
    """Tiramisu up path from the deepest feature's new maps back to ``output_stride``.

    One up step per skip feature (deep to shallow), then skip-less steps halving the stride until
    ``output_stride`` (an ImageNet backbone's shallowest feature has stride 2: one step to full resolution).

    Args:
        feature_info: the backbone's features, high to low resolution, at consecutive power-of-two strides.
            The last is the deepest, where the decoder's input comes from; the others are the skips.
        in_channels: channels of the input: the new maps of the block that produced the deepest feature.
        up_layers: dense layers in each up step, deep to shallow.
        growth_rate: channels each dense layer adds.
        drop_rate: dropout after each dense layer.
        output_stride: stride of the output relative to the image (1 = full resolution).
        memory_efficient: checkpoint each dense layer's concatenation (see ``DenseLayer``).
        norm_layer: normalisation layer factory.

    Raises:
        ValueError: strides are not consecutive powers of two, ``output_stride`` is not a power of two at
            most the shallowest stride, there is no step to take, or ``up_layers`` has the wrong length or
            a count < 1.
    """

    def __init__(
        self,
        *,
        feature_info: Sequence[FeatureSpec],
        in_channels: int,
        up_layers: Sequence[int],
        growth_rate: int = 16,
        drop_rate: float = 0.2,
        output_stride: int = 1,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        feature_info = tuple(feature_info)
        strides = [spec.stride for spec in feature_info]
        if not feature_info or any(b != 2 * a for a, b in zip(strides, strides[1:], strict=False)):
            raise ValueError(
                f"TiramisuDecoder needs features at consecutive strides (each twice the previous) to "
                f"upsample step by step, got {[(s.name, s.stride) for s in feature_info]}"
            )
        ratio = strides[0] // output_stride if output_stride >= 1 else 0
        if ratio < 1 or strides[0] % output_stride or ratio & (ratio - 1):
            raise ValueError(
                f"output_stride must be a power of two <= the shallowest feature's stride {strides[0]}, got "
                f"{output_stride}"
            )
        self.skips = feature_info[:-1][::-1]
        self.targets = (*(spec.stride for spec in self.skips), *_halvings(strides[0], output_stride))
        if not self.targets:
            raise ValueError(
                f"nothing to upsample: one feature {feature_info[0].name} at output_stride={output_stride}"
            )
        if len(up_layers) != len(self.targets) or any(n < 1 for n in up_layers):
            raise ValueError(
                f"up_layers needs {len(self.targets)} positive layer counts (one up step per skip "
                f"{[s.name for s in self.skips]} plus {len(self.targets) - len(self.skips)} to reach "
                f"output_stride={output_stride}), got {tuple(up_layers)}"
            )
        self.steps = nn.ModuleList()
        channels = in_channels
        for i, num_layers in enumerate(up_layers):
            skip_channels = self.skips[i].channels if i < len(self.skips) else 0
            step = _UpStep(
                channels, skip_channels, num_layers, growth_rate, drop_rate, memory_efficient, norm_layer
            )
            self.steps.append(step)
            channels = step.new_channels
        self.out_channels = self.steps[-1].out_channels
        self.output_stride = output_stride

    def forward(self, x: Tensor, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """Upsample step by step.

        Args:
            x: (N, in_channels, h, w) new maps at the deepest feature's stride.
            features: the backbone's feature dict; the skips are read by name.
            image_size: (H, W) of the input image; sets the size of skip-less steps.

        Returns:
            (N, out_channels, ~H / output_stride, ~W / output_stride): the last block's full stack.
        """
        last = len(self.steps) - 1
        for i, (step, stride) in enumerate(zip(self.steps, self.targets, strict=True)):
            skip = features[self.skips[i].name] if i < len(self.skips) else None
            # Strided convs with padding (ImageNet stem) round up, so ceil matches them at every stride.
            size = skip.shape[-2:] if skip is not None else [-(-s // stride) for s in image_size]
            out = step(x, skip, size)
            x = out if i == last else out[:, -step.new_channels :]
        return x


def num_up_steps(feature_info: Sequence[FeatureSpec], output_stride: int = 1) -> int:
    """How many up steps (entries of ``up_layers``) a ``TiramisuDecoder`` over these features has."""
    return len(feature_info) - 1 + len(_halvings(feature_info[0].stride, output_stride))


def _halvings(stride: int, output_stride: int) -> list[int]:
    targets = []
    while stride > output_stride:
        stride //= 2
        targets.append(stride)
    return targets
