"""Turn a trained model into its fastest inference form on this machine.

``optimize_for_inference`` copies the model and applies, in order: eval mode, folding of every
BatchNorm that directly follows a convolution into that convolution (DenseNet's stem ``conv0 -> norm0``
and each bottleneck's ``conv1 -> norm2``; the pre-activation BNs before a conv cannot fold because a ReLU
sits between), channels-last weights and inputs (oneDNN's native layout: no reorders per conv),
bfloat16 autocast where the CPU multiplies bf16 natively (AMX / AVX512-BF16), and optionally
``torch.compile`` (inductor with freezing; deprecated: measured no faster). The result returns float32
outputs shaped exactly like the original's. Torchvision detectors keep their list-of-images interface;
their backbone alone runs in bf16 (``_DetectorBackbone`` says why).

It is the one inference path of the tools: ``densevision predict``, ``extract`` and ``benchmark`` all run
through it (``--no-optimize`` turns it off in the first two; their switches are in
``densevision.apps.inference_args``).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._pytree import tree_leaves, tree_map
from torchvision.ops import FrozenBatchNorm2d

from densevision.inference.cpu import cpu_has_fast_bf16  # noqa: F401  (re-exported: its public home)
from densevision.log import get_logger
from densevision.models.kinds import DETECTOR_TYPES
from densevision.models.layers import DenseLayer

logger = get_logger(__name__)

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
                setattr(module, norm_name, nn.Identity().train(norm.training))  # an eval model stays eval
                folded += 1
    return folded


def _to_float32(out):
    return tree_map(lambda t: t.float() if isinstance(t, Tensor) and t.is_floating_point() else t, out)


def _fast_call(module: nn.Module, x: Tensor, channels_last: bool, bf16: bool):
    """``module(x)`` with a channels-last 4-D ``x``, under bf16 autocast when asked; float32 outputs."""
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        return _to_float32(module(x))


class _DetectorBackbone(nn.Module):
    """A detector's backbone (+ FPN) on the fast path: channels-last input, bf16 autocast when asked,
    float32 feature maps out.

    Detectors get bf16 here only: their heads regress boxes in pixels, which bf16's 8-bit mantissa would
    round to 2-4 px steps at 500-1000 px (torchvision's ``BoxCoder.decode`` casts the anchors to the
    regression's dtype), and the backbone is usually the larger part of the work. Channels-last sits here
    too because the detector's transform batches the images into a new (contiguous) tensor.
    """

    def __init__(self, body: nn.Module, channels_last: bool, bf16: bool) -> None:
        super().__init__()
        self.train(body.training)
        self.body = body
        self.channels_last = channels_last
        self.bf16 = bf16
        self.out_channels = body.out_channels

    def forward(self, x: Tensor):
        """(N, 3, H, W) batched images -> the backbone's feature dict, float32."""
        return _fast_call(self.body, x, self.channels_last, self.bf16)


class InferenceModel(nn.Module):
    """Wraps an eval-mode model: converts inputs to channels-last, runs under bf16 autocast when asked and
    no grad, and returns float32 outputs with the original structure (tensor, dict or tuple).

    A torchvision detector (``DETECTOR_TYPES``) takes its usual list of (3, H, W) images and returns its
    list of detection dicts; ``optimize_for_inference`` then moves the channels-last conversion and the
    autocast into its backbone (``_DetectorBackbone``) and this wrapper only turns autograd off.

    Args:
        model: the prepared (folded, eval) model.
        channels_last: channels-last weights and 4-D inputs.
        bf16: bfloat16 autocast (of the whole forward, or of a detector's backbone).
        detector: ``model`` is a detector whose backbone does the conversions itself.
        compiled: ``model`` (a detector: its backbone) went through ``torch.compile``.
    """

    def __init__(
        self, model: nn.Module, channels_last: bool, bf16: bool, *, detector: bool = False,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        self.train(model.training)  # an eval model's wrapper is in eval too
        self.model = model
        self.channels_last = channels_last
        self.bf16 = bf16
        self.detector = detector
        self.compiled = compiled
        for attr in ("feature_info", "num_classes", "out_channels", "in_chans", "features_only"):
            if hasattr(model, attr):
                setattr(self, attr, getattr(model, attr))

    def describe(self) -> str:
        """The path in words, e.g. ``channels_last + bf16 autocast``."""
        parts = ["channels_last"] if self.channels_last else []
        parts.append(("bf16 autocast" + (" (backbone)" if self.detector else "")) if self.bf16 else "fp32")
        return " + ".join(parts + (["compiled"] if self.compiled else []))

    def forward(self, x: Tensor | list[Tensor]):
        """(N, C, H, W) float input (a detector: its list of (3, H, W) images) -> the wrapped model's
        output, float32, without autograd."""
        with torch.inference_mode():
            if self.detector:
                return _to_float32(self.model(x))
            return _fast_call(self.model, x, self.channels_last, self.bf16)


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
        model: any module; densevision models get their conv-BN pairs folded. A torchvision detector
            (``DETECTOR_TYPES``) keeps taking a list of images; its backbone alone gets bf16 and compile.
        example_input: if given, a forward pass on it warms the model up (and compiles it) and checks
            that the outputs are finite.
        channels_last: use channels-last weights and inputs.
        bf16: bfloat16 autocast; ``None`` = only where the CPU has AMX / AVX512-BF16 (or on CUDA).
        compile: deprecated (warns): wrap with ``torch.compile`` (inductor with freezing; the first call
            compiles for minutes on a small CPU, and the result measured no faster than without).

    Returns:
        An ``InferenceModel`` returning float32 outputs. With bf16, expect differences of order 1e-2
        relative (class agreement, not bitwise equality); without, of order 1e-5.

    Raises:
        ValueError: ``example_input`` is not a 4-D tensor (for a detector: a list of 3-D tensors), or the
            optimised outputs are not finite.
    """
    prepared = copy.deepcopy(model).eval()
    detector = isinstance(prepared, DETECTOR_TYPES)
    fold_batchnorms(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    if bf16 is None:
        param = next(prepared.parameters(), None)
        device = param.device.type if param is not None else "cpu"
        bf16 = cpu_has_fast_bf16() if device == "cpu" else device == "cuda"
    if detector:
        body = _compile(prepared.backbone) if compile else prepared.backbone
        prepared.backbone = _DetectorBackbone(body, channels_last, bf16)
    elif compile:
        prepared = _compile(prepared)
    optimized = InferenceModel(prepared, channels_last, bf16, detector=detector, compiled=compile)
    if example_input is not None:
        _check_example(optimized, example_input, detector)
    return optimized


_COMPILE_DEPRECATED = (
    "compile=True (--compile) is deprecated and will be removed: inductor with freezing ran 1.01x the "
    "optimised eager path (DenseNet-121 bf16, batch 8, Intel AMX, 2 threads) after 518 s of compiling; "
    "for more speed export the model and run it with --backend openvino"
)


def _compile(module: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor's freezing, through ``torch.compile``'s public ``options``: weights
    become constants, so the conv-BN folds and the weight layout conversions (to oneDNN's blocked and bf16
    forms) happen once at compile time instead of on every call. Freezing applies under ``inference_mode``,
    which is how ``InferenceModel`` runs."""
    warnings.warn(_COMPILE_DEPRECATED, FutureWarning, stacklevel=3)
    return torch.compile(module, options={"freezing": True})


def _check_example(optimized: InferenceModel, example_input: object, detector: bool) -> None:
    if detector:
        valid = isinstance(example_input, list | tuple) and all(
            isinstance(t, Tensor) and t.dim() == 3 for t in example_input
        )
        expected = "a list of (3, H, W) tensors (a detector's input)"
    else:
        valid = isinstance(example_input, Tensor) and example_input.dim() == 4
        expected = "an (N, C, H, W) tensor"
    if not valid:
        is_tensor = isinstance(example_input, Tensor)
        got = tuple(example_input.shape) if is_tensor else type(example_input).__name__
        raise ValueError(f"example_input must be {expected}, got {got}")
    leaves = [t for t in tree_leaves(optimized(example_input)) if isinstance(t, Tensor)]
    if not all(torch.isfinite(t).all() for t in leaves):
        raise ValueError("optimised model gives non-finite outputs on example_input")


def inference_path(
    model: nn.Module, *, optimize: bool = True, bf16: bool | None = None, compile: bool = False
) -> nn.Module:
    """How the tools (predict, extract) run ``model``: ``optimize_for_inference``'s copy, or with
    ``optimize=False`` the model itself in eval mode (eager float32, for comparison or debugging).

    Raises:
        ValueError: ``optimize=False`` with ``bf16=True`` or ``compile=True`` (those choose how the
            optimised path runs).
    """
    if not optimize:
        if bf16 or compile:
            raise ValueError(
                "--bf16 and --compile choose how the optimised path runs; drop them or drop --no-optimize"
            )
        return model.eval()
    if bf16 and not cpu_has_fast_bf16() and all(p.device.type == "cpu" for p in model.parameters()):
        logger.warning(
            "this CPU has no AMX / AVX512-BF16: bfloat16 autocast is emulated and usually slower than fp32"
        )
    return optimize_for_inference(model, bf16=bf16, compile=compile)
