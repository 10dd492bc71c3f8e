"""Dense connectivity building blocks (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

Shared by the DenseNet backbones and the FC-DenseNet (Tiramisu) decoder. Module names follow
torchvision's ``models/densenet.py`` (``norm1``/``conv1``/``norm2``/``conv2``, ``denselayerN``,
``transition`` ``norm``/``conv``/``pool``) so torchvision state dicts load with ``strict=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Restore BatchNorm running statistics after the block: a checkpoint's recomputation runs the
    forward a second time, which must not update them twice."""
    saved = [(buf, buf.clone()) for name, buf in module.named_buffers() if name.split(".")[-1] in _BN_STATS]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(1x1)-BN-ReLU-Conv(3x3) (bottleneck, ``bn_size > 0``) or BN-ReLU-Conv(3x3).

    The optional bottleneck is ``norm1``/``relu1``/``conv1``; the 3x3 stage is always
    ``norm2``/``relu2``/``conv2``. Dropout follows the 3x3 conv.

    Args:
        in_channels: channels of the concatenated input.
        growth_rate: channels k this layer adds.
        bn_size: bottleneck width as a multiple of k (torchvision's ``bn_size``); 0 = no bottleneck.
        drop_rate: dropout probability after the 3x3 conv.
        memory_efficient: recompute concat-BN-ReLU-first conv in backward instead of storing it.
        norm_layer: normalisation layer factory.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.has_bottleneck = bn_size > 0
        if self.has_bottleneck:
            width = bn_size * growth_rate
            self.norm1 = norm_layer(in_channels)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        else:
            width = in_channels
        self.norm2 = norm_layer(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _first_stage(self, *inputs: Tensor) -> Tensor:
        """Concatenate, normalise and apply the first conv: the part whose input grows with depth."""
        concat = torch.cat(inputs, 1)
        if self.has_bottleneck:
            return self.conv1(self.relu1(self.norm1(concat)))
        return self.conv2(self.relu2(self.norm2(concat)))

    def forward(self, inputs: list[Tensor]) -> Tensor:
        """(N, C_i, H, W) maps -> (N, growth_rate, H, W) new maps."""
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = cp.checkpoint(
                self._first_stage,
                *inputs,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), _frozen_running_stats(self)),
            )
        else:
            out = self._first_stage(*inputs)
        if self.has_bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of the input and all earlier outputs.

    ``forward``: (N, in_channels, H, W) -> (N, in_channels + num_layers * growth_rate, H, W), the input
    first and the new maps last (so ``out[:, -num_layers * growth_rate:]`` are the new maps).
    """

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_channels + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient, norm_layer
            )
            self.add_module(f"denselayer{i + 1}", layer)
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1x1)-[dropout]-Pool(2x2): halves resolution and compresses channels.

    ``forward_norm`` and ``forward_reduce`` split it where backbones tap their features: after the
    BN-ReLU, where the concatenated maps are normalised.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool: Literal["avg", "max"] = "avg",
        drop_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"transition pool must be 'avg' or 'max', got {pool!r}")
        self.norm = norm_layer(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if drop_rate > 0:
            self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2)
        self.out_channels = out_channels

    def forward_norm(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> normalised, rectified (N, C, H, W)."""
        return self.relu(self.norm(x))

    def forward_reduce(self, x: Tensor) -> Tensor:
        """Normalised (N, C, H, W) -> (N, out_channels, H // 2, W // 2)."""
        x = self.conv(x)
        if hasattr(self, "drop"):
            x = self.drop(x)
        return self.pool(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_reduce(self.forward_norm(x))
