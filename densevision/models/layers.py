"""Dense connectivity building blocks (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

Shared by the DenseNet backbones and the FC-DenseNet (Tiramisu) decoder. Module names follow
torchvision's ``models/densenet.py`` (``norm1``/``conv1``/``norm2``/``conv2``, ``denselayerN``,
``transition`` ``norm``/``conv``/``pool``) so torchvision state dicts load with ``strict=True``.

This file is the reference path: per-layer concatenation and BN-ReLU-Conv module by module, as
torchvision runs it, readable and runnable on its own: it imports no fast path. The fused CPU path
(``densevision.models.fused_dense_block``, imported with ``densevision.models``) plugs in at one point,
``DenseBlock.fused_forward``; ``DenseBlock.fast_path`` (set for a whole model with ``set_fast_path``)
chooses it per block. The fused path runs only where it keeps this path's contracts and otherwise returns
``None`` so that this code runs.
"""

# No ``from __future__ import annotations`` here: TorchScript resolves the string annotations of
# ``torch.jit.unused`` methods outside this module, so the blocks would no longer script.
import contextlib
from collections.abc import Callable, Sequence
from typing import List, Literal  # noqa: UP035 (TorchScript reads typing.List)

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn
from typing_extensions import TypedDict, Unpack

NormLayer = Callable[[int], nn.Module]


def set_fast_path(model: nn.Module, enabled: bool) -> nn.Module:
    """Choose, for every dense block in ``model`` (and every DenseNet's channels-last CPU layout), between
    the fused CPU paths (``True``, the default of a new module) and the module path (``False``: NCHW,
    per-layer concatenation, module by module, as torchvision runs a DenseNet). In the spirit of timm's
    ``set_grad_checkpointing``; returns ``model``.

    Even when enabled, a block takes the module path wherever the fused paths could not keep its
    contracts (see ``densevision.models.fused_dense_block``). Disable it for double backward (gradient
    penalties), which the fused training path refuses with autograd's ``once_differentiable`` error.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_fast_path: enabled must be True or False, got {enabled!r}")
    for module in model.modules():
        if "fast_path" in vars(module):
            module.fast_path = enabled
    return model


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class _FrozenRunningStats:
    """Restore BatchNorm running statistics after the block: a checkpoint's recomputation runs the
    forward a second time, which must not update them twice. Only the norms inside the checkpoint: a
    restore bumps a buffer's version, which would fail a retained graph's second backward through a BN
    outside it that saved the buffer. Re-enterable: the checkpoint reuses its recomputation context for
    every backward of a retained graph."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[Tensor, Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(buf, buf.clone()) for name, buf in self.module.named_buffers()
                      if name.split(".")[-1] in _BN_STATS]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buf, value in self.saved:
                buf.copy_(value)
        self.saved = []


def checkpoint_block(module: nn.Module, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` recomputed in backward instead of stored; the BN running statistics in ``module``
    (the norms ``fn`` runs) are updated once (dropout masks repeat: the checkpoint replays the random
    state)."""
    if torch.compiler.is_compiling():
        # Dynamo cannot trace a context_fn; AOTAutograd recomputes only pure ops, so the running
        # statistics are updated once without it.
        return cp.checkpoint(fn, *inputs, use_reentrant=False)
    return cp.checkpoint(
        fn, *inputs, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _FrozenRunningStats(module)),
    )


class DenseLayerOptions(TypedDict, total=False):
    """``DenseLayer``'s keyword options, which a ``DenseBlock`` gives every layer (defaults there)."""

    memory_efficient: bool
    norm_layer: NormLayer
    dilation: int


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
        dilation: dilation of the 3x3 conv (padding = dilation, so H x W is kept): a backbone with a
            smaller output stride dilates the blocks after a transition that no longer pools.
    """

    __constants__ = ["has_bottleneck"]  # TorchScript compiles only the branch that exists

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        dilation: int = 1,
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
        self.conv2 = nn.Conv2d(
            width, growth_rate, kernel_size=3, padding=dilation, dilation=dilation, bias=False
        )
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _first_stage(self, concat: Tensor) -> Tensor:
        """Normalise the concatenated maps and apply the first conv: the part whose input grows with depth."""
        if self.has_bottleneck:
            return self.conv1(self.relu1(self.norm1(concat)))
        return self.conv2(self.relu2(self.norm2(concat)))

    @torch.jit.unused
    def _checkpoints(self, inputs: List[Tensor]) -> bool:  # noqa: UP006
        return self.memory_efficient and _checkpoint_applies(inputs)

    @torch.jit.unused
    def _checkpointed_first_stage(self, inputs: List[Tensor]) -> Tensor:  # noqa: UP006
        first_norm = self.norm1 if self.has_bottleneck else self.norm2
        return checkpoint_block(first_norm, lambda *maps: self._first_stage(torch.cat(maps, 1)), *inputs)

    def forward(self, inputs: List[Tensor]) -> Tensor:  # noqa: UP006 (TorchScript reads typing.List)
        """(N, C_i, H, W) maps -> (N, growth_rate, H, W) new maps."""
        if not torch.jit.is_scripting() and self._checkpoints(inputs):
            out = self._checkpointed_first_stage(inputs)
        else:
            out = self._first_stage(torch.cat(inputs, 1))
        if self.has_bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


def _checkpoint_applies(inputs: Sequence[Tensor]) -> bool:
    """Checkpoint where a gradient will flow, in eager mode: an fx graph records the ops themselves
    (checkpointing them is then the graph's business). TorchScript cannot run a checkpoint: its callers
    are ``torch.jit.unused``."""
    if not torch.is_grad_enabled() or isinstance(inputs[0], torch.fx.Proxy):
        return False
    return any(t.requires_grad for t in inputs)


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of the input and all earlier outputs.

    ``forward``: (N, in_channels, H, W) -> (N, in_channels + num_layers * growth_rate, H, W), the input
    first and the new maps last (so ``out[:, -num_layers * growth_rate:]`` are the new maps).
    ``bn_size``, ``drop_rate`` and the keyword ``layer_options`` (``memory_efficient``, ``norm_layer``,
    ``dilation``) are every layer's (see ``DenseLayer``).
    """

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        **layer_options: Unpack[DenseLayerOptions],
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            width = in_channels + i * growth_rate
            layer = DenseLayer(width, growth_rate, bn_size, drop_rate, **layer_options)
            self.add_module(f"denselayer{i + 1}", layer)
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate
        self.fast_path = True  # see set_fast_path

    # The fused path: ``fused_forward(block, x)`` returns ``block(x)`` or ``None`` where this module path
    # must run. ``densevision.models.fused_dense_block`` plugs itself in here when imported, so that this
    # reference path does not import it back (``None``: every block runs the module path).
    fused_forward: Callable[["DenseBlock", Tensor], Tensor | None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.fast_path and not torch.jit.is_scripting():
            out = self._fused_forward(x)
            if out is not None:
                return out
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)

    @torch.jit.unused
    def _fused_forward(self, x: Tensor) -> Tensor | None:
        fused = DenseBlock.fused_forward
        return None if fused is None else fused(self, x)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1x1)-[dropout]-Pool(2x2): halves resolution and compresses channels.

    ``forward_norm`` and ``forward_reduce`` split it where backbones tap their features: after the
    BN-ReLU, where the concatenated maps are normalised. With ``memory_efficient`` a whole-transition
    ``forward`` in training stores only its input (the block output, kept anyway) and recomputes the rest
    in backward: at a dense block's resolution, BN-ReLU and conv outputs are as large as the block output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool: Literal["avg", "max"] = "avg",
        drop_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.memory_efficient = memory_efficient
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

    def _forward(self, x: Tensor) -> Tensor:
        return self.forward_reduce(self.forward_norm(x))

    @torch.jit.unused
    def _checkpoints(self, x: Tensor) -> bool:
        return self.memory_efficient and self.training and _checkpoint_applies([x])

    @torch.jit.unused
    def _checkpointed_forward(self, x: Tensor) -> Tensor:
        return checkpoint_block(self.norm, self._forward, x)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self._checkpoints(x):
            return self._checkpointed_forward(x)
        return self._forward(x)
