"""Turn a trained model into its fastest inference form on this machine.

``optimize_for_inference`` copies the model and applies, in order: eval mode, folding of every
BatchNorm that directly follows a convolution into that convolution (DenseNet's stem ``conv0 -> norm0``
and each bottleneck's ``conv1 -> norm2``; the pre-activation BNs before a conv cannot fold because a ReLU
sits between), channels-last weights and inputs (oneDNN's native layout: no reorders per conv),
bfloat16 autocast where the CPU multiplies bf16 natively (AMX / AVX512-BF16), and optionally
``torch.compile``. The result returns float32 outputs shaped exactly like the original's.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._pytree import tree_map
from torchvision.ops import FrozenBatchNorm2d

from densevision.models.layers import DenseLayer

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AMX-BF16 or AVX512-BF16 (per ``/proc/cpuinfo``): elsewhere bf16 is emulated
    and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(norm, nn.BatchNorm2d | FrozenBatchNorm2d)
        and getattr(norm, "running_mean", None) is not None
        and conv.out_channels == norm.running_mean.numel()
    )


def _fold(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    if isinstance(norm, FrozenBatchNorm2d):  # same buffers as an eval BatchNorm2d
        bn = nn.BatchNorm2d(norm.weight.numel(), eps=norm.eps).eval()
        bn.load_state_dict({k: getattr(norm, k) for k in ("weight", "bias", "running_mean", "running_var")},
                           strict=False)
        norm = bn
    return fuse_conv_bn_eval(conv.eval(), norm.eval())


def fold_batchnorms(model: nn.Module) -> int:
    """Fold each BN that directly follows a conv into it, in place (eval mode); returns how many folded.

    Pairs are taken where the data flow is known: adjacent ``conv, bn`` children of a plain
    ``nn.Sequential`` (which includes DenseNet's ``features.conv0, norm0`` stem, called in that order) and
    a bottleneck ``DenseLayer``'s ``conv1 -> norm2``. The BN is replaced by ``nn.Identity``.
    """
    folded = 0
    for module in list(model.modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(module, DenseLayer) and module.has_bottleneck:
            pairs.append(("conv1", "norm2"))
        elif type(module) is nn.Sequential:
            names = list(module._modules)
            pairs.extend(zip(names, names[1:], strict=False))
        for conv_name, norm_name in pairs:
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if _foldable(conv, norm):
                setattr(module, conv_name, _fold(conv, norm))
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


class InferenceModel(nn.Module):
    """Wraps an eval-mode model: converts inputs to channels-last, runs under bf16 autocast when asked and
    no grad, and returns float32 outputs with the original structure (tensor, dict or tuple).

    Args:
        model: the prepared (folded, eval) model.
        channels_last: feed 4-D inputs in channels-last memory format.
        bf16: run under ``torch.autocast(dtype=torch.bfloat16)``.
    """

    def __init__(self, model: nn.Module, channels_last: bool, bf16: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.bf16 = bf16
        for attr in ("feature_info", "num_classes", "out_channels", "in_chans"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def forward(self, x: Tensor):
        """(N, C, H, W) float input -> the wrapped model's output, float32, without autograd."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        return tree_map(lambda t: t.float() if isinstance(t, Tensor) and t.is_floating_point() else t, out)


def optimize_for_inference(
    model: nn.Module,
    *,
    example_input: Tensor | None = None,
    channels_last: bool = True,
    bf16: bool | None = None,
    compile: bool = False,
) -> InferenceModel:
    """A copy of ``model`` prepared for the fastest inference path on this machine.

    Args:
        model: any module; densevision models get their conv-BN pairs folded.
        example_input: if given, a forward pass on it warms the model up (and compiles it) and checks
            that the outputs are finite.
        channels_last: use channels-last weights and inputs.
        bf16: bfloat16 autocast; ``None`` = only where the CPU has AMX / AVX512-BF16 (or on CUDA).
        compile: wrap with ``torch.compile`` (first call compiles: minutes on a small CPU).

    Returns:
        An ``InferenceModel`` returning float32 outputs. With bf16, expect differences of order 1e-2
        relative (class agreement, not bitwise equality); without, of order 1e-5.

    Raises:
        ValueError: ``example_input`` is not a 4-D tensor, or the optimised outputs are not finite.
    """
    prepared = copy.deepcopy(model).eval()
    fold_batchnorms(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    if bf16 is None:
        param = next(prepared.parameters(), None)
        device = param.device.type if param is not None else "cpu"
        bf16 = cpu_has_fast_bf16() if device == "cpu" else device == "cuda"
    if compile:
        prepared = torch.compile(prepared)
    optimized = InferenceModel(prepared, channels_last, bf16)
    if example_input is not None:
        if not isinstance(example_input, Tensor) or example_input.dim() != 4:
            shape = tuple(example_input.shape) if isinstance(example_input, Tensor) else type(example_input)
            raise ValueError(f"example_input must be an (N, C, H, W) tensor, got {shape}")
        outputs = optimized(example_input)
        leaves = [t for t in torch.utils._pytree.tree_leaves(outputs) if isinstance(t, Tensor)]
        if not all(torch.isfinite(t).all() for t in leaves):
            raise ValueError("optimised model gives non-finite outputs on example_input")
    return optimized
