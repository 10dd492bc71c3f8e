"""DenseBlock's fused paths against the module path and torchvision: outputs, parameter gradients and BN
running statistics; the fallbacks (eval, FrozenBatchNorm2d, compile, trace). The contract cases of the
fused paths are in test_fused_dense_block.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from densevision.models import fused_dense_block
from densevision.models.backbones.densenet import DenseNet
from densevision.models.layers import DenseBlock, set_fast_path
from tests.bn import randomize_bn_statistics


def _runs_fused(block: nn.Module, x: torch.Tensor) -> bool:
    return fused_dense_block._step_aside_reason(block, x) is None


def test_cpu_training_takes_the_fused_path_plain_and_memory_efficient():
    x = torch.randn(2, 6, 5, 7)
    assert _runs_fused(DenseBlock(2, 6, 4, 4, 0.0).train(), x)
    assert _runs_fused(DenseBlock(2, 6, 4, 4, 0.0, memory_efficient=True).train(), x)


def _train_step(model: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    out = model(x)
    (out * weight).sum().backward()
    return out


def _assert_same_state(a: nn.Module, b: nn.Module, atol: float) -> None:
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, atol=atol, rtol=atol, msg=f"grad of {name}")
    bufs_b = dict(b.named_buffers())
    for name, buf in a.named_buffers():
        torch.testing.assert_close(buf, bufs_b[name], atol=atol, rtol=atol, msg=f"buffer {name}")


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["plain", "memory-efficient"])
@pytest.mark.parametrize("bn_size", [4, 0], ids=["bottleneck", "no-bottleneck"])
def test_fused_block_equals_module_path(bn_size, memory_efficient):
    fused = DenseBlock(3, 6, 4, bn_size, 0.0, memory_efficient=memory_efficient).double()
    reference = set_fast_path(copy.deepcopy(fused), False)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    weight = torch.randn(2, fused.out_channels, 5, 7, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert _runs_fused(fused, x1)
    out = _train_step(fused, x1, weight)
    expected = _train_step(reference, x2, weight)
    assert out.shape == (2, 6 + 3 * 4, 5, 7)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=1e-10)
    _assert_same_state(fused, reference, atol=1e-10)


def test_densenet_matches_torchvision_after_a_training_step():
    """Same weights: logits, every parameter gradient and every running statistic after an SGD step equal
    torchvision's (float64, where float32 rounding of ill-conditioned BN gradients cannot hide a bug).
    A four-block k=8 DenseNet keeps torchvision's key names (``norm5``) at a fraction of the cost."""
    tv = torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, bn_size=4, num_classes=10).double()
    dv = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), stem_channels=16, num_classes=10).double()
    dv.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for model in (dv, tv):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.out = model(x)
        model.out.square().mean().backward()
        opt.step()
    torch.testing.assert_close(dv.out, tv.out, atol=1e-9, rtol=1e-9)
    _assert_same_state(dv, tv, atol=1e-8)
    dv.eval(), tv.eval()
    with torch.no_grad():
        torch.testing.assert_close(dv(x), tv(x), atol=1e-9, rtol=1e-9)


def _tiny(**kwargs) -> DenseNet:
    return DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=5, **kwargs)


def test_memory_efficient_equals_plain_densenet():
    plain = _tiny().double()
    efficient = _tiny(memory_efficient=True).double()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    weight = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(_train_step(efficient, x, weight), _train_step(plain, x, weight))
    _assert_same_state(efficient, plain, atol=1e-10)


def test_frozen_batchnorm_takes_the_module_path_and_matches_eval_batchnorm():
    bn_model = randomize_bn_statistics(_tiny(), mean_range=1.0).eval()
    frozen = _tiny(norm_layer=FrozenBatchNorm2d)
    frozen.load_state_dict(bn_model.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    block = frozen.features.denseblock1
    assert "BatchNorm2d" in fused_dense_block._step_aside_reason(block, x)
    out = frozen(x)  # training mode: frozen statistics, trainable convs
    out.sum().backward()
    torch.testing.assert_close(out, bn_model(x), atol=1e-5, rtol=1e-5)
    assert frozen.features.conv0.weight.grad is not None


@pytest.mark.parametrize(
    ("change", "reason"),
    [(lambda m: m.eval(), "eval"), (lambda m: m.train().requires_grad_(False), "no grad")],
)
def test_fallback_conditions(change, reason):
    block = DenseBlock(2, 6, 4, 4, 0.0)
    x = torch.randn(2, 6, 4, 4)
    change(block)
    with torch.set_grad_enabled(reason != "no grad"):
        assert block.training == (reason == "no grad") and not _runs_fused(block, x.requires_grad_())


def test_trace_in_eval_matches_eager():
    model = _tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), model(x))


def test_memory_efficient_under_torch_compile_matches_eager():
    """Under compile the block takes the module path (checkpointed when memory-efficient); aot_eager
    traces forward and backward like inductor but skips C++ code generation, keeping the test short."""
    eager = _tiny(memory_efficient=True)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    x = torch.randn(2, 3, 32, 32)
    weight = torch.randn(2, 5)
    torch.testing.assert_close(_train_step(compiled, x, weight), _train_step(eager, x, weight))
    _assert_same_state(compiled_model, eager, atol=1e-5)


def _max_rel_errors(model: nn.Module, exact: nn.Module) -> dict[str, float]:
    """Per parameter: max |grad - exact grad| / max |exact grad|."""
    exact_grads = {name: p.grad for name, p in exact.named_parameters()}
    return {
        name: ((p.grad.double() - exact_grads[name]).abs().max() / exact_grads[name].abs().max()).item()
        for name, p in model.named_parameters()
    }


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["plain", "memory-efficient"])
def test_float32_fused_block_is_as_accurate_as_the_module_path(memory_efficient):
    """In float32 the fused path (compiled kernels, shared statistics, GEMM 1x1 conv) must be as close to
    the float64 result as the float32 module path is: its error may not exceed the module path's by more
    than a small factor. (Equality to a fixed tolerance would be meaningless: BN gradients through batch
    statistics lose digits to cancellation in either implementation.)"""
    torch.manual_seed(0)
    fused = DenseBlock(4, 16, 8, 4, 0.0, memory_efficient=memory_efficient)
    with torch.no_grad():
        for m in fused.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    module32 = set_fast_path(copy.deepcopy(fused), False)
    exact = set_fast_path(copy.deepcopy(fused).double(), False)
    x = torch.randn(4, 16, 12, 12) * 2 + 0.5
    weight = torch.randn(4, fused.out_channels, 12, 12)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert _runs_fused(fused, cl)
    out = _train_step(fused, cl.clone().requires_grad_(), weight)
    _train_step(module32, cl.clone().requires_grad_(), weight)
    expected = _train_step(exact, x.double().requires_grad_(), weight.double())
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    fused_err, module_err = _max_rel_errors(fused, exact), _max_rel_errors(module32, exact)
    for name, err in fused_err.items():
        assert err <= 4 * module_err[name] + 1e-5, (name, err, module_err[name])
    for name, buf in exact.named_buffers():
        torch.testing.assert_close(dict(fused.named_buffers())[name].to(buf.dtype), buf, atol=1e-5, rtol=1e-5)


def test_densenet_runs_channels_last_on_cpu_and_accepts_nchw_input():
    model = _tiny()
    x = torch.randn(2, 3, 32, 32)
    feats = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, features_only=True)(x)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats.values())
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 5) and model.features.conv0.weight.grad is not None


def _with_running_stats(model: nn.Module) -> nn.Module:
    randomize_bn_statistics(model, mean_range=1.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("bn_size", [4, 0], ids=["bottleneck", "no-bottleneck"])
def test_inference_block_equals_module_path(bn_size):
    block = _with_running_stats(DenseBlock(3, 6, 4, bn_size, 0.2))
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        assert _runs_fused(block, x)
        out = block(x)
        expected = set_fast_path(copy.deepcopy(block), False)(x)
    assert out.shape == (2, 18, 5, 7) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_inference_path_with_frozen_batchnorm_folded_convs_and_bf16_autocast():
    """optimize_for_inference folds conv1 -> norm2 (norm2 becomes Identity) and may run under bf16
    autocast: the inference block must give the module path's results there too."""
    from densevision.inference.optimize import optimize_for_inference

    model = _with_running_stats(_tiny())
    x = torch.randn(2, 3, 32, 32)
    for bf16, tol in ((False, 1e-5), (True, 5e-2)):
        fast = optimize_for_inference(model, bf16=bf16)
        out = fast(x)
        expected = set_fast_path(copy.deepcopy(fast), False)(x)
        torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    frozen = _tiny(norm_layer=FrozenBatchNorm2d).eval()
    frozen.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert _runs_fused(frozen.features.denseblock1, torch.randn(1, 8, 8, 8))
        torch.testing.assert_close(frozen(x), model(x), atol=1e-5, rtol=1e-5)


def test_eval_with_gradients_takes_the_module_path():
    block = _with_running_stats(DenseBlock(2, 6, 4, 4, 0.0))
    x = torch.randn(1, 6, 4, 4, requires_grad=True)
    assert fused_dense_block._step_aside_reason(block, x) == "a gradient is wanted"
    block(x).sum().backward()
    assert x.grad is not None
