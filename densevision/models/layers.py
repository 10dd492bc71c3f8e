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
from torchvision.ops import FrozenBatchNorm2d

from densevision.models import kernels

NormLayer = Callable[[int], nn.Module]

_reference_mode = False


@contextlib.contextmanager
def reference_mode() -> Iterator[None]:
    """Inside, DenseNets run as torchvision's do: NCHW, per-layer concatenation and module-by-module
    BN-ReLU-Conv, in training and in eval. The baseline that benchmarks compare the fused paths with."""
    global _reference_mode
    previous, _reference_mode = _reference_mode, True
    try:
        yield
    finally:
        _reference_mode = previous


def reference_mode_enabled() -> bool:
    return _reference_mode


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


def _checkpoint(module: nn.Module, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """``fn(*inputs)`` recomputed in backward instead of stored; ``module``'s BN running statistics are
    updated once (dropout masks repeat: the checkpoint replays the random state)."""
    if torch.compiler.is_compiling():
        # Dynamo cannot trace a context_fn; AOTAutograd recomputes only pure ops, so the running
        # statistics are updated once without it.
        return cp.checkpoint(fn, *inputs, use_reentrant=False)
    return cp.checkpoint(
        fn, *inputs, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _frozen_running_stats(module)),
    )


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

    def stages(self) -> tuple[nn.Module, nn.Conv2d, nn.Module | None, nn.Conv2d | None]:
        """(norm, conv) on the concatenated input, then the bottleneck's (norm, conv) or ``None``s."""
        if self.has_bottleneck:
            return self.norm1, self.conv1, self.norm2, self.conv2
        return self.norm2, self.conv2, None, None

    def norms(self) -> list[nn.Module]:
        return [m for m in self.stages()[::2] if m is not None]

    def fused_params(self) -> list[Tensor]:
        """Parameters in the order ``_FusedDenseBlock`` returns their gradients."""
        params = []
        for norm, conv in zip(self.stages()[::2], self.stages()[1::2], strict=True):
            if norm is not None:
                params += [norm.weight, norm.bias, conv.weight]
        return params

    def _first_stage(self, *inputs: Tensor) -> Tensor:
        """Concatenate, normalise and apply the first conv: the part whose input grows with depth."""
        concat = torch.cat(inputs, 1)
        if self.has_bottleneck:
            return self.conv1(self.relu1(self.norm1(concat)))
        return self.conv2(self.relu2(self.norm2(concat)))

    def forward(self, inputs: list[Tensor]) -> Tensor:
        """(N, C_i, H, W) maps -> (N, growth_rate, H, W) new maps."""
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = _checkpoint(self, self._first_stage, *inputs)
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
    ``dilation`` is every layer's 3x3 dilation (see ``DenseLayer``).
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
        dilation: int = 1,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_channels + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient, norm_layer,
                dilation,
            )
            self.add_module(f"denselayer{i + 1}", layer)
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        if _inference_path_applies(self, x):
            return _dense_block_inference(self, x)
        if _fast_path_applies(self, x):
            params = [p for layer in self.values() for p in layer.fused_params()]
            efficient = any(layer.memory_efficient for layer in self.values())
            return _FusedDenseBlock.apply(self, efficient, x, *params)
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


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

    def forward(self, x: Tensor) -> Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled() and x.requires_grad:
            return _checkpoint(self, self._forward, x)
        return self._forward(x)


def _inference_path_applies(block: DenseBlock, x: Tensor) -> bool:
    """Eval-mode forward on the CPU with nothing needing a gradient, eager (not traced, scripted or
    compiled: exports keep the module path), every concatenation normalised by running statistics."""
    if _reference_mode or block.training or x.dim() != 4 or x.device.type != "cpu":
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    return all(_running_affine(layer.stages()[0]) is not None for layer in block.values())


def _running_affine(norm: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(scale, shift), each (C,), that an eval-mode BatchNorm2d / FrozenBatchNorm2d applies."""
    if not isinstance(norm, nn.BatchNorm2d | FrozenBatchNorm2d):
        return None
    mean, var = getattr(norm, "running_mean", None), getattr(norm, "running_var", None)
    if mean is None or var is None:
        return None
    weight = norm.weight if norm.weight is not None else torch.ones_like(mean)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(mean)
    scale = weight * torch.rsqrt(var + norm.eps)
    return scale, bias - mean * scale


def _dense_block_inference(block: DenseBlock, x: Tensor) -> Tensor:
    """A dense block in eval mode without re-concatenation: the maps go into one channels-last buffer, and
    each layer's first BN-ReLU (running statistics folded into one scale and shift) is one fused pass
    over the buffer's first C_l channels. Under CPU autocast the buffer holds bfloat16 maps, as the
    module path's would. The rest of each layer (bottleneck BN or its folded conv, 3x3 conv) runs through
    its modules. Equals the module path to float rounding."""
    n, c0, h, w = x.shape
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    raw = torch.empty((n * h * w, block.out_channels), dtype=dtype)
    _image(raw[:, :c0], n, h, w).copy_(x)
    c = c0
    for layer in block.values():
        first_norm, first_conv, second_norm, second_conv = layer.stages()
        scale, shift = _running_affine(first_norm)
        zeros, ones = torch.zeros_like(scale), torch.ones_like(scale)
        out = first_conv(_image(kernels.affine_relu_rows(raw[:, :c], zeros, ones, scale, shift), n, h, w))
        if second_conv is not None:
            out = second_conv(F.relu(second_norm(out)))
        _image(raw[:, c : c + out.shape[1]], n, h, w).copy_(out)
        c += out.shape[1]
    return _image(raw, n, h, w)


def _fast_path_applies(block: DenseBlock, x: Tensor) -> bool:
    """The fused path covers CPU training with plain BatchNorm2d batch statistics (one eps for the
    concatenated maps); everything else (eval, FrozenBatchNorm2d, autocast, CUDA, compile, tracing,
    no grad) takes the module path."""
    if _reference_mode or not (block.training and torch.is_grad_enabled() and x.dim() == 4):
        return False
    if x.device.type != "cpu":
        return False
    if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu"):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    eps = set()
    for layer in block.values():
        if layer.drop_rate >= 1:
            return False
        for norm in layer.norms():
            if type(norm) is not nn.BatchNorm2d or not (norm.affine and norm.track_running_stats):
                return False
            if norm.momentum is None:
                return False
        eps.add(layer.stages()[0].eps)
    return len(eps) == 1


def _update_running_stats(norm: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """What ``F.batch_norm`` does in training: momentum update with the unbiased batch variance."""
    momentum = norm.momentum
    norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    norm.running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))
    norm.num_batches_tracked.add_(1)


def _image(rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """(N*H*W, C) rows (channels contiguous) -> the same memory as an (N, C, H, W) channels-last view."""
    return rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def _rows(image: Tensor) -> Tensor:
    """(N, C, H, W) -> (N*H*W, C) rows: a view of a channels-last tensor, a copy otherwise."""
    n, c, h, w = image.shape
    return image.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _batch_stats(image: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(N, C, H, W) -> the batch (mean, biased variance, invstd) of each channel, as training BN takes
    them, each (C,)."""
    _, mean, invstd = torch.native_batch_norm(image, None, None, None, None, True, 0.0, eps)
    return mean, invstd.pow(-2).sub_(eps), invstd


_ROW_BLOCK = 16384  # rows per partial sum: bounds the temporary of a product to 16384 x C


def _normalize_backward(grad_xhat: Tensor, x: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """Gradient w.r.t. the maps ``x`` of a batch normalisation ``xhat = (x - mean) * invstd`` with batch
    statistics, from the gradient w.r.t. ``xhat``: (M, C) rows -> new contiguous (M, C) rows.

    ``invstd * (g - mean(g) - xhat * mean(g * xhat))``, built in the one new (M, C) tensor that holds
    ``xhat``: a block's input can be hundreds of channels at full resolution.
    """
    xhat = kernels.normalize_rows(x, mean, invstd)
    count = xhat.shape[0]
    mean_grad = grad_xhat.sum(0).div_(count)
    mean_grad_xhat = sum(
        (grad_xhat[i : i + _ROW_BLOCK] * xhat[i : i + _ROW_BLOCK]).sum(0) for i in range(0, count, _ROW_BLOCK)
    ).div_(count)
    return xhat.mul_(mean_grad_xhat.neg_()).add_(grad_xhat).sub_(mean_grad).mul_(invstd)


def _conv_backward(grad: Tensor, inp: Tensor, conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.convolution_backward(
        grad, inp, conv.weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], 1,
        [True, True, False],
    )[:2]


def _bn_relu(z: Tensor, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor, Tensor]:
    """Training BN (updating running statistics) + ReLU: -> (output, batch mean, batch invstd)."""
    y, mean, invstd = torch.native_batch_norm(
        z, norm.weight, norm.bias, norm.running_mean, norm.running_var, True, norm.momentum, norm.eps
    )
    norm.num_batches_tracked.add_(1)
    return y.relu_(), mean, invstd


def _bn_relu_replay(z: Tensor, norm: nn.BatchNorm2d, mean: Tensor, invstd: Tensor) -> Tensor:
    """``_bn_relu``'s output again from its saved statistics (memory-efficient backward)."""
    return F.batch_norm(z, mean, invstd.pow(-2), norm.weight, norm.bias, False, 0.0, 0.0).relu_()


class _FusedDenseBlock(torch.autograd.Function):
    """A whole dense block in training mode on the CPU, without re-concatenation (after Pleiss et al.,
    "Memory-Efficient Implementation of DenseNets", 2017).

    All maps live in one channels-last block buffer that each layer appends its k maps to. Every
    layer's first BN normalises the concatenation with batch statistics, which for a map are the same
    in every later layer: so each map's mean and invstd are computed once, and a layer's BN-ReLU is one
    fused pass ``relu(gamma * (x - mean) * invstd + beta)`` over a view of the buffer (``kernels``).
    The first 1x1 conv is a matrix product on the channels-last rows. Backward is written out: the
    layers' BN-ReLU gradients accumulate into one gradient buffer w.r.t. the normalised maps, and each
    map's gradient through its batch statistics is taken once, when the backward reaches the layer that
    produced it. With ``memory_efficient`` the BN-ReLU outputs and bottleneck maps are recomputed in
    backward instead of stored, so stored activations grow linearly with depth. Dropout masks are kept
    as booleans. Outputs, gradients and running statistics equal the module
    path's to float rounding.
    """

    @staticmethod
    def forward(ctx, block: DenseBlock, memory_efficient: bool, x: Tensor, *params: Tensor) -> Tensor:
        n, c0, h, w = x.shape
        count = n * h * w
        layers = list(block.values())
        eps = layers[0].stages()[0].eps
        raw = x.new_empty((count, block.out_channels))
        _image(raw[:, :c0], n, h, w).copy_(x)
        # per-channel batch statistics of the whole buffer, filled as maps arrive; layers read prefixes
        means, variances, invstds = (x.new_empty(block.out_channels) for _ in range(3))
        means[:c0], variances[:c0], invstds[:c0] = _batch_stats(x, eps)
        records = []
        c = c0
        for layer in layers:
            first_norm, first_conv, second_norm, second_conv = layer.stages()
            _update_running_stats(first_norm, means[:c], variances[:c], count)
            norm_args = (means[:c], invstds[:c], first_norm.weight, first_norm.bias)
            y1 = kernels.affine_relu_rows(raw[:, :c], *norm_args)
            record = {"y1": None if memory_efficient else y1}
            if second_norm is None:
                out = F.conv2d(_image(y1, n, h, w), first_conv.weight, None, first_conv.stride,
                               first_conv.padding, first_conv.dilation)
            else:
                z = _image(y1 @ first_conv.weight.view(first_conv.out_channels, c).t(), n, h, w)
                y2, z_mean, z_invstd = _bn_relu(z, second_norm)
                out = F.conv2d(y2, second_conv.weight, None, second_conv.stride, second_conv.padding,
                               second_conv.dilation)
                record.update(z=None if memory_efficient else z, z_mean=z_mean, z_invstd=z_invstd,
                              y2=None if memory_efficient else y2)
            if layer.drop_rate > 0:
                # F.dropout's own recipe on the same (channels-last) tensor: the same random stream
                keep = 1.0 - layer.drop_rate
                record["kept"] = torch.empty_like(out).bernoulli_(keep).bool()  # 1 byte per map value
                record["scale"] = out.new_ones(()).div_(keep)  # F.dropout's 1 / keep, rounded as it does
                out = out.mul_(record["kept"]).mul_(record["scale"])
            k = out.shape[1]
            _image(raw[:, c : c + k], n, h, w).copy_(out)
            means[c : c + k], variances[c : c + k], invstds[c : c + k] = _batch_stats(out, eps)
            records.append(record)
            c += k
        ctx.block, ctx.records, ctx.shape = block, records, (n, h, w)
        ctx.means, ctx.invstds = means, invstds
        ctx.save_for_backward(raw)  # the output, which its consumers keep anyway
        return _image(raw, n, h, w)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (raw,) = ctx.saved_tensors
        n, h, w = ctx.shape
        mean, invstd = ctx.means, ctx.invstds
        layers = list(ctx.block.values())
        # grad_out stays as given (a slice's gradient arrives NCHW): read per chunk, never copied whole
        grad_xhat = torch.zeros_like(raw)
        c = raw.shape[1]
        param_grads: list[list[Tensor]] = []
        for i in range(len(layers) - 1, -1, -1):
            first_norm, first_conv, second_norm, second_conv = layers[i].stages()
            record = ctx.records[i]
            k = (second_conv or first_conv).out_channels
            c -= k
            grad = _normalize_backward(grad_xhat[:, c : c + k], raw[:, c : c + k], mean[c : c + k],
                                       invstd[c : c + k])
            grad = _image(grad, n, h, w).add_(grad_out[:, c : c + k])
            if "kept" in record:
                grad = grad.mul_(record["kept"]).mul_(record["scale"])
            y1 = record["y1"]
            if y1 is None:
                y1 = kernels.affine_relu_rows(raw[:, :c], mean[:c], invstd[:c], first_norm.weight,
                                              first_norm.bias)
            grads: list[Tensor] = []
            if second_norm is None:
                grad_y1, grad_w1 = _conv_backward(grad, _image(y1, n, h, w), first_conv)
                grad_y1 = _rows(grad_y1)
            else:
                z = record["z"]
                if z is None:
                    z = _image(y1 @ first_conv.weight.view(first_conv.out_channels, c).t(), n, h, w)
                y2 = record["y2"]
                if y2 is None:
                    y2 = _bn_relu_replay(z, second_norm, record["z_mean"], record["z_invstd"])
                grad, grad_w2 = _conv_backward(grad, y2, second_conv)
                grad = torch.ops.aten.threshold_backward(grad, y2, 0)
                grad, grad_g2, grad_b2 = torch.ops.aten.native_batch_norm_backward(
                    grad, z, second_norm.weight, None, None, record["z_mean"], record["z_invstd"],
                    True, second_norm.eps, [True, True, True],
                )
                grad = _rows(grad)
                grad_w1 = (grad.t() @ y1).view_as(first_conv.weight)
                grad_y1 = grad @ first_conv.weight.view(first_conv.out_channels, c)
                grads = [grad_g2, grad_b2, grad_w2]
            grad_g1, grad_b1 = kernels.affine_relu_rows_backward(
                grad_y1, raw[:, :c], mean[:c], invstd[:c], first_norm.weight, first_norm.bias,
                grad_xhat[:, :c],
            )
            param_grads.append([grad_g1, grad_b1, grad_w1, *grads])
            ctx.records[i] = None  # free this layer's activations now, not when the graph goes
        grad_x = _normalize_backward(grad_xhat[:, :c], raw[:, :c], mean[:c], invstd[:c])
        grad_x = _image(grad_x, n, h, w).add_(grad_out[:, :c])
        return (None, None, grad_x, *(g for grads in reversed(param_grads) for g in grads))
