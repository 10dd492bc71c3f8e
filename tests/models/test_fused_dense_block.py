"""The fused dense-block paths keep the module path's contracts or step aside to it: one test per case of
issue 12, parametrised over plain / memory-efficient / dropout blocks, comparing a block with
``set_fast_path(True)`` against a copy with ``set_fast_path(False)`` (the module path)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from densevision.models import fused_dense_block
from densevision.models.backbones.densenet import DenseNet
from densevision.models.layers import DenseBlock, set_fast_path
from tests.bn import randomize_bn_statistics

VARIANTS = {
    "plain": {"drop_rate": 0.0, "memory_efficient": False},
    "memory_efficient": {"drop_rate": 0.0, "memory_efficient": True},
    "dropout": {"drop_rate": 0.3, "memory_efficient": False},
}
variants = pytest.mark.parametrize("variant", list(VARIANTS))


def _pair(variant: str, bn_size: int = 4, dtype: torch.dtype = torch.float64) -> tuple[DenseBlock, ...]:
    """A tiny block (fast path on) and a copy on the module path."""
    torch.manual_seed(0)
    fused = DenseBlock(3, 6, 4, bn_size, **VARIANTS[variant]).to(dtype)
    return fused, set_fast_path(copy.deepcopy(fused), False)


def _x(n: int = 2, h: int = 5, w: int = 7, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, 6, h, w, dtype=dtype, generator=torch.Generator().manual_seed(1))


def _seeded(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(7)  # same dropout stream for both paths
    return block(x)


def _fused(out: torch.Tensor) -> bool:
    return type(out.grad_fn).__name__ == "_FusedDenseBlockBackward"


def _assert_same(a: nn.Module, b: nn.Module, grads: bool = True) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if grads:
            torch.testing.assert_close(p.grad, q.grad, msg=f"grad of {name}", equal_nan=True)
    for (name, buf), other in zip(a.named_buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(buf, other, msg=f"buffer {name}", equal_nan=True)


def _step(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = _seeded(block, x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out


@variants
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_training_equals_module_path(variant, layout):
    """The baseline every other case is measured against; dropout draws F.dropout's masks in either
    input layout (the module path's maps follow the input's)."""
    fused, reference = _pair(variant)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = _x().contiguous(memory_format=fmt)
    out = _step(fused, x)
    assert _fused(out)
    expected = _step(reference, x)
    torch.testing.assert_close(out, expected)
    _assert_same(fused, reference)
    if variant == "dropout":
        assert 0.1 < (out[:, 6:] == 0).double().mean() < 0.5


@variants
def test_frozen_batchnorm_fine_tuning_takes_the_module_path(variant):
    """Case 1: model.train(), then every BatchNorm (and here dropout) back to eval: no batch statistics,
    no running-statistics update, no dropout, as on the module path."""
    fused, reference = _pair(variant)
    reference.load_state_dict(randomize_bn_statistics(fused).state_dict())
    for block in (fused, reference):
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d) or m is block.denselayer2:
                m.eval()
    before = fused.denselayer1.norm1.running_mean.clone()
    x = _x().requires_grad_()
    reason = fused_dense_block._step_aside_reason(fused, x)
    assert reason == "denselayer1.norm1.training differs from the block's"
    out = _step(fused, x)
    torch.testing.assert_close(out, _step(reference, x))
    _assert_same(fused, reference)
    assert torch.equal(fused.denselayer1.norm1.running_mean, before)


@variants
def test_test_time_adaptation_updates_statistics_as_the_module_path(variant):
    """Case 1, mirror: model in eval, BatchNorms back in train (batch statistics, updated running ones)."""
    fused, reference = _pair(variant)
    reference.load_state_dict(randomize_bn_statistics(fused).state_dict())
    for block in (fused, reference):
        block.eval()
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train()
    x = _x()
    with torch.no_grad():
        out = fused(x)
        torch.testing.assert_close(out, reference(x))
    _assert_same(fused, reference, grads=False)
    assert fused.denselayer1.norm1.num_batches_tracked == 1


@variants
def test_one_value_per_channel_raises_torchs_error(variant):
    """Case 2: batch 1 with 1x1 maps raises torch's ValueError; running_var is not touched (no NaN)."""
    fused, _ = _pair(variant)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fused(_x(1, 1, 1).requires_grad_())
    assert all(torch.isfinite(m.running_var).all() for m in fused.modules() if isinstance(m, nn.BatchNorm2d))


@variants
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_empty_batch_runs_like_the_module_path(variant, training):
    fused, reference = _pair(variant)
    fused.train(training), reference.train(training)
    x = _x(0)
    out = fused(x)
    assert out.shape == reference(x).shape == (0, fused.out_channels, 5, 7)
    _assert_same(fused, reference, grads=False)


@variants
def test_second_backward_with_retain_graph(variant):
    """Case 3: retain_graph=True lets a second backward run (gradients accumulate to twice the first);
    without it, autograd's own error."""
    fused, reference = _pair(variant)
    x = _x().requires_grad_()
    for block in (fused, reference):
        out = _seeded(block, x)
        loss = (out * out.detach()).sum()
        loss.backward(retain_graph=True)
        first = [p.grad.clone() for p in block.parameters()]
        loss.backward()
        for p, g in zip(block.parameters(), first, strict=True):
            torch.testing.assert_close(p.grad, 2 * g)
    _assert_same(fused, reference)
    out = _seeded(fused, x)
    assert _fused(out)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


@variants
def test_double_backward_is_refused_by_once_differentiable(variant):
    """Case 3: a gradient penalty (double backward) raises autograd's error on the fused path; the module
    path computes it (set_fast_path(model, False) is the documented choice for it)."""
    fused, reference = _pair(variant)
    x = _x().requires_grad_()
    (grad,) = torch.autograd.grad(_seeded(reference, x).square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    out = _seeded(fused, x)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        grad.square().sum().backward()


@variants
@pytest.mark.parametrize("where", ["conv1", "norm2", "output"])
def test_in_place_changes_before_backward_raise_the_version_counter_error(variant, where):
    """Case 3: a parameter changed in place between forward and backward raises autograd's error on both
    paths; on the fused path also the block output (its saved buffer), and the 1x1 conv of a
    memory-efficient block (whose module path checkpoint recomputes with the changed weight)."""
    fused, reference = _pair(variant)
    x = _x().requires_grad_()
    fused_only = where == "output" or (where, variant) == ("conv1", "memory_efficient")
    blocks = (fused,) if fused_only else (fused, reference)
    for block in blocks:
        out = _seeded(block, x)
        if where == "output":
            out.mul_(2)
        else:
            with torch.no_grad():
                getattr(block.denselayer1, where).weight.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


@variants
@pytest.mark.parametrize("bn_size", [2, 0], ids=["bottleneck", "no-bottleneck"])
def test_gradcheck_in_float64(variant, bn_size):
    """Case 3: torch.autograd.gradcheck of the fused path w.r.t. the input and every parameter."""
    torch.manual_seed(0)
    block = DenseBlock(2, 3, 2, bn_size, **VARIANTS[variant]).double()
    names = [name for name, _ in block.named_parameters()]
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in block.parameters()]

    def fn(x, *params):
        torch.manual_seed(7)  # the same dropout mask for every evaluation
        out = torch.func.functional_call(block, dict(zip(names, params, strict=True)), (x,))
        assert _fused(out)
        return out

    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


def _count_calls(module: nn.Module, calls: list) -> None:
    module.register_forward_hook(lambda m, args, out: calls.append(m))


@variants
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_hooks_fire(variant, training):
    """Case 4: hooks on a layer or its conv fire (the block steps aside); outputs as on the module path."""
    fused, reference = _pair(variant)
    fused.train(training), reference.train(training)
    calls: list = []
    _count_calls(fused.denselayer2, calls)
    _count_calls(fused.denselayer3.conv2, calls)
    x = _x()
    assert fused_dense_block._step_aside_reason(fused, x) == "hooks on denselayer2"
    torch.testing.assert_close(_seeded(fused, x), _seeded(reference, x))
    assert calls == [fused.denselayer2, fused.denselayer3.conv2]


def test_global_module_hooks_fire():
    fused, _ = _pair("plain")
    calls: list = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: calls.append(type(m)))
    try:
        _step(fused, _x())
    finally:
        handle.remove()
    assert nn.Conv2d in calls and nn.BatchNorm2d in calls


@variants
def test_pruning_trains_like_the_module_path(variant):
    """Case 4: l1_unstructured pruning (a forward pre-hook and a weight_orig parameter), two SGD steps."""
    fused, reference = _pair(variant)
    x = _x()
    for block in (fused, reference):
        prune.l1_unstructured(block.denselayer1.conv1, "weight", 0.5)
        opt = torch.optim.SGD(block.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            _step(block, x)
            opt.step()
    _assert_same(fused, reference)


class _Scale(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 0.5 * weight


@variants
def test_parametrised_weights_take_the_module_path(variant):
    fused, reference = _pair(variant)
    for block in (fused, reference):
        parametrize.register_parametrization(block.denselayer2.norm1, "weight", _Scale())
    x = _x()
    assert "parametrised" in fused_dense_block._step_aside_reason(fused, x)
    torch.testing.assert_close(_step(fused, x), _step(reference, x))
    _assert_same(fused, reference)


@variants
def test_dilated_conv_takes_the_module_path(variant):
    """A 3x3 conv changed to dilation 2 (padding 2, the same size) after construction: training takes the
    module path, evaluation stays fused; both give the module path's results."""
    fused, reference = _pair(variant)
    for block in (fused, reference):
        block.denselayer2.conv2.dilation, block.denselayer2.conv2.padding = (2, 2), (2, 2)
    x = _x()
    assert "no dilation" in fused_dense_block._step_aside_reason(fused, x)
    with torch.no_grad():  # evaluation calls the dilated conv module itself: it stays fused
        assert fused_dense_block._step_aside_reason(fused.eval(), x) is None
    for training in (True, False):
        fused.train(training), reference.train(training)
        with torch.set_grad_enabled(training):
            torch.testing.assert_close(_step(fused, x) if training else fused(x),
                                       _step(reference, x) if training else reference(x))
    _assert_same(fused, reference)


@variants
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_one_nan_pixel_spreads_as_on_the_module_path(variant, training):
    """Case 5: NaN propagates through the kernels' ReLU as through torch.relu (float32: compiled kernels)."""
    fused, reference = _pair(variant, dtype=torch.float32)
    fused.train(training), reference.train(training)
    x = _x(dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    x[0, 2, 1, 3] = float("nan")
    with torch.set_grad_enabled(training):
        out, expected = _seeded(fused, x), _seeded(reference, x)
        assert fused_dense_block._step_aside_reason(fused, x) is None
    new = out[:, 6:]
    assert torch.equal(new.isnan(), expected[:, 6:].isnan())
    assert new.isnan().float().mean() > (0.9 if training else 0.1)  # batch statistics spread it everywhere
    _assert_same(fused, reference, grads=False)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_bf16_autocast_eval_returns_the_module_paths_dtype(input_dtype):
    """Case 7: float32 input under bf16 autocast takes the module path (float32 output, the passthrough
    channels not rounded); bfloat16 input (as inside a DenseNet under autocast) runs fused, in bf16."""
    fused, reference = _pair("plain", dtype=torch.float32)
    reference.load_state_dict(randomize_bn_statistics(fused).state_dict())
    fused.eval(), reference.eval()
    x = _x(dtype=torch.float32).to(input_dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, expected = fused(x), reference(x)
        fused_ran = fused_dense_block._step_aside_reason(fused, x) is None
    assert fused_ran == (input_dtype == torch.bfloat16)
    assert out.dtype == expected.dtype == input_dtype
    assert torch.equal(out[:, :6], x)
    torch.testing.assert_close(out.float(), expected.float(), atol=0.1, rtol=0.05)


@variants
def test_functorch_transforms_take_the_module_path(variant):
    """vmap over a batch of inputs in eval (BatchNorm's in-place running-statistics update rules out
    training under a transform on either path)."""
    fused, _ = _pair(variant)
    reference = randomize_bn_statistics(fused).eval()
    fused = copy.deepcopy(reference)
    xs = torch.randn(3, 2, 6, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        out = torch.func.vmap(fused)(xs)
        expected = set_fast_path(reference, False)(xs.flatten(0, 1)).unflatten(0, (3, 2))
    torch.testing.assert_close(out, expected)


def test_fx_symbolic_trace_and_script():
    """Case 7: a DenseNet traces with torch.fx (memory-efficient too) and its blocks script; the DenseNet
    itself refuses torch.jit.script with a message saying what to use instead."""
    net = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=5, memory_efficient=True,
                   drop_rate=0.2).eval()
    x = torch.randn(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(net)
    torch.testing.assert_close(traced(x), net(x))
    with pytest.raises(RuntimeError, match="cannot be compiled by torch.jit.script.*torch.jit.trace"):
        torch.jit.script(net)
    for name in ("denseblock1", "transition1"):
        module = getattr(net.features, name)
        scripted = torch.jit.script(module)
        inp = torch.randn(2, module.in_channels if name == "denseblock1" else 16, 8, 8)
        torch.testing.assert_close(scripted(inp), module(inp))
        module.train(), scripted.train()
        scripted(inp.requires_grad_()).sum().backward()


def test_set_fast_path_is_per_model_and_checks_its_argument():
    a = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=5)
    b = set_fast_path(copy.deepcopy(a), False)
    assert a.fast_path and all(blk.fast_path for blk in a.modules() if isinstance(blk, DenseBlock))
    assert not b.fast_path and not any(blk.fast_path for blk in b.modules() if isinstance(blk, DenseBlock))
    x = torch.randn(2, 3, 32, 32)
    feats = set_fast_path(DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, features_only=True),
                          False)(x)
    assert all(f.is_contiguous() for f in feats.values())  # the module path stays NCHW
    torch.testing.assert_close(_step(a, x), _step(b, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="enabled must be True or False, got 'no'"):
        set_fast_path(a, "no")
