"""Fused CPU paths of ``DenseBlock``: one dispatch point, ``forward(block, x)``, which returns the block's
output or ``None`` when the module path (``densevision.models.layers``, the reference) must run.

The arrow runs one way: this module imports the reference path and plugs ``forward`` into it
(``DenseBlock.fused_forward``, at the end of this file); ``layers.py`` never imports it.
``densevision.models`` imports this module, so every model built from the package has it; each block
chooses it with ``DenseBlock.fast_path`` (``set_fast_path`` for a whole model).

Two paths, both without re-concatenation (after Pleiss et al., "Memory-Efficient Implementation of
DenseNets", 2017): every map lives in one channels-last block buffer that each layer appends its k maps
to, and each layer's first BN-ReLU is one pass of a compiled kernel (``densevision.models.kernels``,
``torch.library`` ops) over the buffer's first C_l channels.

- Training (``_FusedDenseBlock``): every map's batch statistics are computed once and shared by each
  later layer's BatchNorm; the backward is written out.
- Evaluation (``_dense_block_inference``): running statistics folded into one scale and shift per layer.

A block runs fused only where that keeps every contract of the module path; ``_step_aside_reason`` names
the first that would not hold (``None``: run fused):

- eager CPU tensors only: not under fx, TorchScript, ``torch.compile``, functorch transforms or forward
  AD, no tensor subclasses;
- no module hooks (on any submodule of the block, or global), no parametrisations, no replaced
  ``forward``; only ``DenseLayer``, ``nn.BatchNorm2d`` (and ``FrozenBatchNorm2d`` in eval), ``nn.ReLU``
  and ``nn.Conv2d``, in training with the settings the block builds (1x1 / 3x3, stride 1, padding 0 /
  1, no dilation, no groups, no bias; evaluation calls the conv modules, so any settings run);
- one ``training`` flag for the block and everything in it (frozen-BN fine-tuning runs the module path);
- in training: float32 / float64 without autocast, BatchNorm with running statistics and a momentum, one
  eps, more than one value per channel (torch raises its own error for one), dropout below 1;
- in evaluation: no gradient wanted; under autocast only input already in the autocast dtype (the module
  path's concatenation would be promoted otherwise);
- a non-empty batch.

Autograd: parameters and the output buffer go through ``save_for_backward`` (in-place changes raise
autograd's version-counter error); backward is ``once_differentiable`` (double backward raises autograd's
error: use ``set_fast_path(model, False)`` for gradient penalties); a second backward works after
``retain_graph=True`` and raises autograd's error otherwise.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize
from torchvision.ops import FrozenBatchNorm2d

from densevision.models import kernels
from densevision.models.layers import DenseBlock, DenseLayer

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def forward(block: DenseBlock, x: Tensor) -> Tensor | None:
    """``block(x)`` by a fused path, or ``None`` where the module path must run."""
    if _step_aside_reason(block, x) is not None:
        return None
    if block.training:
        params = [p for layer in block.values() for p in _fused_params(layer)]
        efficient = any(layer.memory_efficient for layer in block.values())
        return _FusedDenseBlock.apply(block, efficient, x, *params)
    return _dense_block_inference(block, x)


def _step_aside_reason(block: DenseBlock, x: Tensor) -> str | None:
    """Why ``block(x)`` must take the module path, or ``None`` if a fused path keeps its contracts."""
    reason = _context_reason(x) or _module_reason(block)
    if reason is not None:
        return reason
    if block.training:
        return _training_reason(block, x)
    return _inference_reason(block, x)


def _context_reason(x: Tensor) -> str | None:
    if type(x) is not torch.Tensor:
        return f"input of type {type(x).__name__} (fx proxy or tensor subclass)"
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return "scripting, tracing or compiling"
    if torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0:
        return "functorch transform or forward-mode AD"
    if x.device.type != "cpu" or x.dim() != 4:
        return f"input on {x.device.type} with {x.dim()} dims"
    if x.numel() == 0:
        return "empty input"
    return None


def _module_reason(block: DenseBlock) -> str | None:
    if any(getattr(_module, name) for name in _GLOBAL_HOOKS):
        return "global module hooks"
    for name, module in block.named_modules():
        if module is not block and any(getattr(module, d, None) for d in _HOOK_DICTS):
            return f"hooks on {name}"
        if parametrize.is_parametrized(module) or "forward" in vars(module):
            return f"{name} is parametrised or has its own forward"
        if module.training != block.training:
            return f"{name}.training differs from the block's"
    for name, layer in block.items():
        if type(layer) is not DenseLayer:
            return f"{name} is a {type(layer).__name__}"
        reason = _layer_reason(layer, block.training)
        if reason is not None:
            return f"{name}: {reason}"
    return None


def _layer_reason(layer: DenseLayer, training: bool) -> str | None:
    """The convs and ReLUs the layer builds; in training also the settings it builds the convs with
    (evaluation calls the conv modules themselves, so a dilated or folded conv runs as it is)."""
    relus = [layer.relu1, layer.relu2] if layer.has_bottleneck else [layer.relu2]
    if any(type(relu) is not nn.ReLU for relu in relus):
        return "ReLU replaced"
    convs = [(layer.conv1, 1), (layer.conv2, 3)] if layer.has_bottleneck else [(layer.conv2, 3)]
    for conv, size in convs:
        if type(conv) is not nn.Conv2d:
            return "a conv other than nn.Conv2d"
        if not training:
            continue
        settings = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.padding_mode)
        built = ((size, size), (1, 1), (size // 2, size // 2), (1, 1), 1, "zeros")
        if settings != built:
            return f"a conv other than {size}x{size}, stride 1, same padding, no dilation, no groups"
    return None


def _training_reason(block: DenseBlock, x: Tensor) -> str | None:
    if not torch.is_grad_enabled():
        return "no gradient"
    if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu"):
        return f"{x.dtype} input or autocast"
    n, _, h, w = x.shape
    if n * h * w <= 1:
        return "one value per channel (BatchNorm raises)"
    eps = set()
    for layer in block.values():
        if layer.drop_rate >= 1:
            return "dropout rate 1"
        first_conv = _stages(layer)[1]
        if first_conv.bias is not None or (layer.has_bottleneck and layer.conv2.bias is not None):
            return "a conv with bias"
        for norm in _norms(layer):
            if type(norm) is not nn.BatchNorm2d or not (norm.affine and norm.track_running_stats):
                return "a norm other than BatchNorm2d with affine parameters and running statistics"
            if norm.momentum is None or norm.running_mean is None:
                return "cumulative BatchNorm averages"
        eps.add(_stages(layer)[0].eps)
        params = _fused_params(layer)
        if any(p.dtype != x.dtype or type(p) not in (nn.Parameter, torch.Tensor) for p in params):
            return "parameters of another dtype or tensor type"
    return None if len(eps) == 1 else "different eps"


def _inference_reason(block: DenseBlock, x: Tensor) -> str | None:
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return "a gradient is wanted"
    if torch.is_autocast_enabled("cpu"):
        if x.dtype != torch.get_autocast_dtype("cpu"):
            return "autocast with input of another dtype (the module path promotes the concatenation)"
    elif x.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return f"{x.dtype} input"
    for layer in block.values():
        first_norm, first_conv = _stages(layer)[:2]
        if _running_affine(first_norm) is None:
            return "a first norm without running statistics"
        if not torch.is_autocast_enabled("cpu") and first_conv.weight.dtype != x.dtype:
            return "parameters of another dtype"
    return None


def _stages(layer: DenseLayer) -> tuple[nn.Module, nn.Conv2d, nn.Module | None, nn.Conv2d | None]:
    """(norm, conv) on the concatenated input, then the bottleneck's (norm, conv) or ``None``s."""
    if layer.has_bottleneck:
        return layer.norm1, layer.conv1, layer.norm2, layer.conv2
    return layer.norm2, layer.conv2, None, None


def _norms(layer: DenseLayer) -> list[nn.Module]:
    return [m for m in _stages(layer)[::2] if m is not None]


def _fused_params(layer: DenseLayer) -> list[Tensor]:
    """Parameters in the order ``_FusedDenseBlock`` returns their gradients."""
    stages = _stages(layer)
    params = []
    for norm, conv in zip(stages[::2], stages[1::2], strict=True):
        if norm is not None:
            params += [norm.weight, norm.bias, conv.weight]
    return params


def _running_affine(norm: nn.Module) -> tuple[Tensor, Tensor] | None:
    """(scale, shift), each (C,), that an eval-mode BatchNorm2d / FrozenBatchNorm2d applies."""
    if type(norm) not in (nn.BatchNorm2d, FrozenBatchNorm2d):
        return None
    mean, var = getattr(norm, "running_mean", None), getattr(norm, "running_var", None)
    if mean is None or var is None:
        return None
    weight = norm.weight if norm.weight is not None else torch.ones_like(mean)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(mean)
    scale = weight * torch.rsqrt(var + norm.eps)
    return scale, bias - mean * scale


def _dense_block_inference(block: DenseBlock, x: Tensor) -> Tensor:
    """A dense block in eval mode without re-concatenation: the maps go into one channels-last buffer of
    the input's dtype (the module path's concatenation has that dtype too, under autocast as well: see
    ``_inference_reason``), and each layer's first BN-ReLU (running statistics folded into one scale and
    shift) is one fused pass over the buffer's first C_l channels. The rest of each layer (bottleneck BN
    or its folded conv, 3x3 conv) runs through its modules. Equals the module path to float rounding."""
    n, c0, h, w = x.shape
    raw = torch.empty((n * h * w, block.out_channels), dtype=x.dtype)
    _image(raw[:, :c0], n, h, w).copy_(x)
    c = c0
    for layer in block.values():
        first_norm, first_conv, second_norm, second_conv = _stages(layer)
        scale, shift = _running_affine(first_norm)
        zeros, ones = torch.zeros_like(scale), torch.ones_like(scale)
        out = first_conv(_image(kernels.affine_relu_rows(raw[:, :c], zeros, ones, scale, shift), n, h, w))
        if second_conv is not None:
            out = second_conv(layer.relu2(second_norm(out)))
        _image(raw[:, c : c + out.shape[1]], n, h, w).copy_(out)
        c += out.shape[1]
    return _image(raw, n, h, w)


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


def _conv_backward(grad: Tensor, inp: Tensor, weight: Tensor, conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.convolution_backward(
        grad, inp, weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], 1,
        [True, True, False],
    )[:2]


def _bn_relu(z: Tensor, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor, Tensor]:
    """Training BN (updating running statistics) + ReLU: -> (output, batch mean, batch invstd)."""
    y, mean, invstd = torch.native_batch_norm(
        z, norm.weight, norm.bias, norm.running_mean, norm.running_var, True, norm.momentum, norm.eps
    )
    norm.num_batches_tracked.add_(1)
    return y.relu_(), mean, invstd


def _bn_relu_replay(z: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """``_bn_relu``'s output again from its saved statistics (memory-efficient backward)."""
    return F.batch_norm(z, mean, invstd.pow(-2), gamma, beta, False, 0.0, 0.0).relu_()


def _memory_format(x: Tensor) -> torch.memory_format:
    """The layout the module path's maps take from its input: dropout draws its mask in that order."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _FusedDenseBlock(torch.autograd.Function):
    """A whole dense block in training mode on the CPU.

    All maps live in one channels-last block buffer that each layer appends its k maps to. Every layer's
    first BN normalises the concatenation with batch statistics, which for a map are the same in every
    later layer: so each map's mean and invstd are computed once, and a layer's BN-ReLU is one fused pass
    ``relu(gamma * (x - mean) * invstd + beta)`` over a view of the buffer (``kernels``). The first 1x1
    conv is oneDNN's convolution on the channels-last view of those rows. Backward is written out: the
    layers' BN-ReLU gradients accumulate into one gradient buffer w.r.t. the normalised maps, and each
    map's gradient through its batch statistics is taken once, when the backward reaches the layer that
    produced it. With ``memory_efficient`` the BN-ReLU outputs and bottleneck maps are recomputed in
    backward instead of stored, so stored activations grow linearly with depth. Dropout masks are kept as
    booleans, drawn as ``F.dropout`` draws them in the module path's layout. Outputs, gradients and
    running statistics equal the module path's to float rounding.

    The parameters and the output (the block buffer) are saved with ``save_for_backward``, so autograd's
    version counters catch in-place changes to them: changing the output in place before backward
    raises autograd's error here, where the module path (which saves no concatenation it returns)
    allows it. The per-layer activations are private to this function (nothing else holds them) and
    stay on ``ctx``, so that backward can free each layer's as soon as it is used, unless the graph is
    retained.
    """

    @staticmethod
    def forward(ctx, block: DenseBlock, memory_efficient: bool, x: Tensor, *params: Tensor) -> Tensor:
        n, c0, h, w = x.shape
        count = n * h * w
        layers = list(block.values())
        eps = _stages(layers[0])[0].eps
        mask_format = _memory_format(x)
        # the output itself, not a view of a buffer (autograd forbids in-place changes of a view that a
        # custom Function returns); raw is its (N*H*W, C) rows
        output = torch.empty((n, block.out_channels, h, w), dtype=x.dtype, memory_format=torch.channels_last)
        raw = _rows(output)
        _image(raw[:, :c0], n, h, w).copy_(x)
        # per-channel batch statistics of the whole buffer, filled as maps arrive; layers read prefixes
        means, variances, invstds = (x.new_empty(block.out_channels) for _ in range(3))
        means[:c0], variances[:c0], invstds[:c0] = _batch_stats(x, eps)
        records = []
        c = c0
        for layer in layers:
            first_norm, first_conv, second_norm, second_conv = _stages(layer)
            _update_running_stats(first_norm, means[:c], variances[:c], count)
            norm_args = (means[:c], invstds[:c], first_norm.weight, first_norm.bias)
            y1 = kernels.affine_relu_rows(raw[:, :c], *norm_args)
            record = {"y1": None if memory_efficient else y1}
            if second_norm is None:
                out = F.conv2d(_image(y1, n, h, w), first_conv.weight, None, first_conv.stride,
                               first_conv.padding)
            else:
                z = F.conv2d(_image(y1, n, h, w), first_conv.weight)  # 1x1: oneDNN on channels-last
                y2, z_mean, z_invstd = _bn_relu(z, second_norm)
                out = F.conv2d(y2, second_conv.weight, None, second_conv.stride, second_conv.padding)
                record.update(z=None if memory_efficient else z, z_mean=z_mean, z_invstd=z_invstd,
                              y2=None if memory_efficient else y2)
            if layer.drop_rate > 0:
                # F.dropout's own recipe (empty_like(out).bernoulli_) on a tensor of the module path's
                # layout: the same random stream gives the same mask
                keep = 1.0 - layer.drop_rate
                kept = torch.empty(out.shape, dtype=out.dtype, memory_format=mask_format).bernoulli_(keep)
                record["kept"] = kept.bool()  # 1 byte per map value
                record["scale"] = out.new_ones(()).div_(keep)  # F.dropout's 1 / keep, rounded as it does
                out = out.mul_(record["kept"]).mul_(record["scale"])
            k = out.shape[1]
            _image(raw[:, c : c + k], n, h, w).copy_(out)
            means[c : c + k], variances[c : c + k], invstds[c : c + k] = _batch_stats(out, eps)
            records.append(record)
            c += k
        ctx.block, ctx.records, ctx.shape = block, records, (n, h, w)
        ctx.save_for_backward(output, means, invstds, *params)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        output, mean, invstd, *params = ctx.saved_tensors  # unpacking checks the version counters
        raw = _rows(output)
        n, h, w = ctx.shape
        layers = list(ctx.block.values())
        bounds = [0, *itertools.accumulate(3 + 3 * layer.has_bottleneck for layer in layers)]
        free = not torch._C._autograd._get_current_graph_task_keep_graph()
        # grad_out stays as given (a slice's gradient arrives NCHW): read per chunk, never copied whole
        grad_xhat = torch.zeros_like(raw)
        c = raw.shape[1]
        param_grads: list[list[Tensor]] = []
        for i in range(len(layers) - 1, -1, -1):
            first_norm, first_conv, second_norm, second_conv = _stages(layers[i])
            gamma1, beta1, weight1, *second = params[bounds[i] : bounds[i + 1]]
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
                y1 = kernels.affine_relu_rows(raw[:, :c], mean[:c], invstd[:c], gamma1, beta1)
            grads: list[Tensor] = []
            if second_norm is None:
                grad_y1, grad_w1 = _conv_backward(grad, _image(y1, n, h, w), weight1, first_conv)
                grad_y1 = _rows(grad_y1)
            else:
                gamma2, beta2, weight2 = second
                z = record["z"]
                if z is None:
                    z = F.conv2d(_image(y1, n, h, w), weight1)
                y2 = record["y2"]
                if y2 is None:
                    y2 = _bn_relu_replay(z, gamma2, beta2, record["z_mean"], record["z_invstd"])
                grad, grad_w2 = _conv_backward(grad, y2, weight2, second_conv)
                grad = torch.ops.aten.threshold_backward(grad, y2, 0)
                grad, grad_g2, grad_b2 = torch.ops.aten.native_batch_norm_backward(
                    grad, z, gamma2, None, None, record["z_mean"], record["z_invstd"],
                    True, second_norm.eps, [True, True, True],
                )
                grad_y1, grad_w1 = _conv_backward(grad, _image(y1, n, h, w), weight1, first_conv)
                grad_y1 = _rows(grad_y1)
                grads = [grad_g2, grad_b2, grad_w2]
            grad_g1, grad_b1 = kernels.affine_relu_rows_backward(
                grad_y1, raw[:, :c], mean[:c], invstd[:c], gamma1, beta1, grad_xhat[:, :c]
            )
            param_grads.append([grad_g1, grad_b1, grad_w1, *grads])
            if free:
                ctx.records[i] = None  # this layer's activations go now, not when the graph goes
        grad_x = _normalize_backward(grad_xhat[:, :c], raw[:, :c], mean[:c], invstd[:c])
        grad_x = _image(grad_x, n, h, w).add_(grad_out[:, :c])
        return (None, None, grad_x, *(g for grads in reversed(param_grads) for g in grads))


DenseBlock.fused_forward = forward
