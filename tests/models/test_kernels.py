"""The compiled dense-block kernels against their ATen fallback, and the build / fallback rules."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from densevision.models import kernels


@pytest.fixture
def fallback(monkeypatch):
    """Inside: the ATen implementation (kernels disabled)."""
    monkeypatch.setenv("DENSEVISION_KERNELS", "0")
    kernels.library.cache_clear()
    yield
    monkeypatch.undo()
    kernels.library.cache_clear()


def _rows(rows: int, channels: int, total: int) -> tuple[torch.Tensor, ...]:
    """A strided (rows, channels) view of a (rows, total) buffer, as the dense block hands it over, and
    (channels,) mean, invstd, gamma, beta."""
    torch.manual_seed(0)
    x = (torch.randn(rows, total) * 3 + 2)[:, :channels]
    mean, invstd = x.mean(0), x.var(0, correction=0).add(1e-5).rsqrt()
    gamma = torch.rand(channels) + 0.5
    gamma[::3] *= -1  # negative scales flip which side of zero is kept
    beta = torch.randn(channels) * 0.5
    return x, mean, invstd, gamma, beta


def _reference(x, mean, invstd, gamma, beta):
    return torch.relu((x - mean) * invstd * gamma + beta)


def test_kernels_compile_where_a_compiler_exists():
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine: the fused block runs on its ATen fallback")
    assert kernels.library() is not None


@pytest.mark.parametrize("threads", [1, 2])
def test_affine_relu_rows_matches_aten(threads, fallback):
    vectors = _rows(517, 37, 50)
    expected = kernels.affine_relu_rows(*vectors)
    assert kernels.library() is None
    kernels.library.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENSEVISION_KERNELS", "1")
        kernels.library.cache_clear()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = kernels.affine_relu_rows(*vectors)
        finally:
            torch.set_num_threads(previous)
        assert kernels.library() is not None
    assert out.is_contiguous() and out.shape == (517, 37)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    assert (out == 0).float().mean() > 0.2  # the ReLU really cuts


@pytest.mark.parametrize("threads", [1, 2])
def test_affine_relu_rows_backward_matches_autograd(threads):
    x, mean, invstd, gamma, beta = _rows(1000, 37, 50)
    grad = torch.randn(1000, 37)
    buffer = torch.randn(1000, 50)
    accumulated = buffer.clone()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        grad_gamma, grad_beta = kernels.affine_relu_rows_backward(
            grad, x, mean, invstd, gamma, beta, accumulated[:, :37]
        )
    finally:
        torch.set_num_threads(previous)
    xhat, g, b = (t.double().requires_grad_() for t in ((x - mean) * invstd, gamma, beta))
    torch.relu(xhat * g + b).backward(grad.double())
    torch.testing.assert_close(grad_gamma.double(), g.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grad_beta.double(), b.grad, atol=1e-4, rtol=1e-5)
    expected = buffer[:, :37].double() + xhat.grad
    torch.testing.assert_close(accumulated[:, :37].double(), expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(accumulated[:, 37:], buffer[:, 37:])  # channels past the view untouched


def test_fallback_is_used_for_other_dtypes():
    vectors = [t.double() for t in _rows(20, 5, 8)]
    out = kernels.affine_relu_rows(*vectors)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference(*vectors))


def test_missing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("DENSEVISION_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    kernels.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="kernels unavailable.*ATen ops"):
            assert kernels.library() is None
        vectors = _rows(10, 4, 6)
        torch.testing.assert_close(kernels.affine_relu_rows(*vectors), _reference(*vectors))
    finally:
        kernels.library.cache_clear()


def test_build_lands_in_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("DENSEVISION_CACHE", str(tmp_path))
    kernels.library.cache_clear()
    try:
        assert kernels.library() is not None
        assert len(list((tmp_path / "kernels").glob("dense_rows-*.so"))) == 1
    finally:
        kernels.library.cache_clear()


def test_bfloat16_rows_round_like_torch():
    """Inference under bf16 autocast: computed in float32 and rounded once, as torch rounds."""
    x, mean, invstd, gamma, beta = _rows(300, 37, 50)
    rows = x.bfloat16()
    out = kernels.affine_relu_rows(rows, mean, invstd, gamma, beta)
    expected = _reference(rows.float(), mean, invstd, gamma, beta).bfloat16()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
