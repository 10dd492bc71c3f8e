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


# The fused block's buffer layout. channels_last measured slower on CPU (1.37x vs 1.09x torchvision's
# step time, same run): ATen's CPU batch-norm kernels are slow on strided channels-last views.
_BUFFER_FORMAT = torch.contiguous_format
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
            if torch.compiler.is_compiling():
                # Dynamo cannot trace a context_fn; AOTAutograd recomputes only pure ops, so the running
                # statistics are updated once without it.
                out = cp.checkpoint(self._first_stage, *inputs, use_reentrant=False)
            else:
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


# The fused path stores far less (memory_efficient: 0.63x torchvision's plain peak at batch 8, 224^2, vs
# 0.67x for torchvision's own memory-efficient mode) but its hand-written backward measured 1.06x
# torchvision's plain step time against 0.98x for the module path on an idle 2-core CPU. So it serves
# memory-efficient training by default and plain training only when this is switched on.
FUSED_PLAIN_TRAINING = False


def _fast_path_applies(block: DenseBlock, x: Tensor) -> bool:
    """The fused training path covers memory-efficient (or, with ``FUSED_PLAIN_TRAINING``, any) training
    with plain BatchNorm2d batch statistics and no dropout;
    everything else (eval, FrozenBatchNorm2d, dropout, compile, tracing, no grad) takes the module path."""
    if not (block.training and torch.is_grad_enabled() and x.dim() == 4 and x.device.type == "cpu"):
        return False
    if not (FUSED_PLAIN_TRAINING or any(layer.memory_efficient for layer in block.values())):
        return False
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    for layer in block.values():
        if layer.drop_rate > 0:
            return False
        for norm in layer.norms():
            if type(norm) is not nn.BatchNorm2d or not (norm.affine and norm.track_running_stats):
                return False
            if norm.momentum is None:
                return False
    return True


def _update_running_stats(norm: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """What ``F.batch_norm`` does in training: momentum update with the unbiased batch variance."""
    momentum = norm.momentum
    norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    norm.running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))
    norm.num_batches_tracked.add_(1)


def _normalize_relu(x: Tensor, norm: nn.BatchNorm2d, mean: Tensor, invstd: Tensor) -> Tensor:
    """relu((x - mean) * invstd * weight + bias) as the training BN kernel computes it: folding the mean
    into the shift instead would cancel catastrophically on channels whose mean dwarfs their spread."""
    y = x - mean.view(1, -1, 1, 1)
    torch.addcmul(norm.bias.view(1, -1, 1, 1), y, (norm.weight * invstd).view(1, -1, 1, 1), out=y)
    return y.relu_()


def _conv_backward(grad: Tensor, inp: Tensor, conv: nn.Conv2d, need_input: bool) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.convolution_backward(
        grad, inp, conv.weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], 1,
        [need_input, True, False],
    )[:2]


class _FusedDenseBlock(torch.autograd.Function):
    """A whole dense block in training mode, without re-concatenation (Pleiss et al., "Memory-Efficient
    Implementation of DenseNets", 2017).

    All maps live in one channels-last block buffer that each layer appends its k maps to; the batch
    mean/variance of every map is computed once and shared by all later layers (only their affine
    parameters differ), so each layer's BN-ReLU is one pass over a view of the buffer. Backward is
    written out with ATen's own convolution / batch-norm backward kernels, accumulating into one
    gradient buffer. With ``memory_efficient`` the layers' BN-ReLU outputs are recomputed in backward
    instead of stored, so stored activations grow linearly with depth. Outputs, gradients and running
    statistics equal the module path's to float rounding.
    """

    @staticmethod
    def forward(ctx, block: DenseBlock, memory_efficient: bool, x: Tensor, *params: Tensor) -> Tensor:
        n, c0, h, w = x.shape
        buf = torch.empty((n, block.out_channels, h, w), dtype=x.dtype, memory_format=_BUFFER_FORMAT)
        buf[:, :c0] = x
        count = n * h * w
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        means, variances = [mean], [var]
        saved = []
        c = c0
        for layer in block.values():
            first_norm, first_conv, second_norm, second_conv = layer.stages()
            mean, var = torch.cat(means), torch.cat(variances)
            _update_running_stats(first_norm, mean, var, count)
            invstd = torch.rsqrt(var + first_norm.eps)
            y1 = _normalize_relu(buf[:, :c], first_norm, mean, invstd)
            out = F.conv2d(y1, first_conv.weight, None, first_conv.stride, first_conv.padding)
            record = {"mean": mean, "invstd": invstd, "y1": None if memory_efficient else y1}
            if second_norm is not None:
                z = out
                y2, save_mean, save_invstd = torch.native_batch_norm(
                    z, second_norm.weight, second_norm.bias, second_norm.running_mean,
                    second_norm.running_var, True, second_norm.momentum, second_norm.eps,
                )
                second_norm.num_batches_tracked.add_(1)
                y2.relu_()
                out = F.conv2d(y2, second_conv.weight, None, second_conv.stride, second_conv.padding)
                record.update(z=z, save_mean=save_mean, save_invstd=save_invstd,
                              y2=None if memory_efficient else y2)
            buf[:, c : c + out.shape[1]] = out
            var, mean = torch.var_mean(out, dim=(0, 2, 3), correction=0)
            means.append(mean)
            variances.append(var)
            saved.append(record)
            c += out.shape[1]
        ctx.block, ctx.saved, ctx.c0 = block, saved, c0
        ctx.save_for_backward(buf)
        return buf

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (buf,) = ctx.saved_tensors
        block, c0 = ctx.block, ctx.c0
        grad_buf = grad_out.contiguous(memory_format=_BUFFER_FORMAT).clone()
        grads: list[list[Tensor]] = []
        c = block.out_channels
        for layer, rec in zip(reversed(list(block.values())), reversed(ctx.saved), strict=True):
            first_norm, first_conv, second_norm, second_conv = layer.stages()
            k = second_conv.out_channels if second_conv is not None else first_conv.out_channels
            c -= k
            grad = grad_buf[:, c : c + k]
            layer_grads = []
            if second_norm is not None:
                y2 = rec["y2"]
                if y2 is None:
                    y2 = _normalize_relu(rec["z"], second_norm, rec["save_mean"], rec["save_invstd"])
                grad, g_conv2 = _conv_backward(grad, y2, second_conv, True)
                grad = torch.ops.aten.threshold_backward(grad, y2, 0)
                grad, g_w2, g_b2 = torch.ops.aten.native_batch_norm_backward(
                    grad, rec["z"], second_norm.weight, None, None, rec["save_mean"], rec["save_invstd"],
                    True, second_norm.eps, [True, True, True],
                )
                layer_grads = [g_w2, g_b2, g_conv2]
            x = buf[:, :c]
            y1 = rec["y1"]
            if y1 is None:
                y1 = _normalize_relu(x, first_norm, rec["mean"], rec["invstd"])
            grad, g_conv1 = _conv_backward(grad, y1, first_conv, True)
            grad = torch.ops.aten.threshold_backward(grad, y1, 0)
            grad, g_w1, g_b1 = torch.ops.aten.native_batch_norm_backward(
                grad, x, first_norm.weight, None, None, rec["mean"], rec["invstd"],
                True, first_norm.eps, [True, True, True],
            )
            grad_buf[:, :c] += grad
            grads.append([g_w1, g_b1, g_conv1, *layer_grads])
        flat = [g for layer_grads in reversed(grads) for g in layer_grads]
        return (None, None, grad_buf[:, :c0], *flat)
