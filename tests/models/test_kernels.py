"""The compiled dense-block kernels against their ATen fallback, and the build / fallback rules."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

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


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh, empty kernel cache under tmp_path; ``library()`` rebuilt from it."""
    monkeypatch.setenv("DENSEVISION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DENSEVISION_KERNELS", raising=False)
    kernels.library.cache_clear()
    yield tmp_path / "cache" / "kernels"
    kernels.library.cache_clear()


needs_compiler = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
                                    reason="no C compiler: the kernels run on their ATen code")


@pytest.mark.parametrize("kernels_on", [True, False], ids=["compiled", "aten"])
def test_ops_pass_opcheck(kernels_on, monkeypatch):
    """The custom ops' schema, fake (meta) implementation and dispatch agree with what they compute."""
    if not kernels_on:
        monkeypatch.setenv("DENSEVISION_KERNELS", "0")
    kernels.library.cache_clear()
    try:
        x, mean, invstd, gamma, beta = _rows(64, 5, 8)
        torch.library.opcheck(torch.ops.densevision.affine_relu_rows.default, (x, mean, invstd, gamma, beta))
        torch.library.opcheck(torch.ops.densevision.affine_relu_rows.default,
                              (x.bfloat16(), mean, invstd, gamma, beta))
        grad, grad_xhat = torch.randn(64, 5), torch.zeros(64, 8)[:, :5]
        torch.library.opcheck(torch.ops.densevision.affine_relu_rows_backward.default,
                              (grad, x, mean, invstd, gamma, beta, grad_xhat))
        compiler = bool(shutil.which("cc") or shutil.which("gcc"))
        assert (kernels.library() is not None) == (kernels_on and compiler)
    finally:
        kernels.library.cache_clear()


def test_relu_keeps_nan_like_torch():
    x, mean, invstd, gamma, beta = _rows(40, 6, 8)
    x = x.clone()
    x[3, 2] = float("nan")
    for rows in (x, x.bfloat16()):
        out = kernels.affine_relu_rows(rows, mean, invstd, gamma, beta)
        assert out[3, 2].isnan() and out.isnan().sum() == 1
    grad, grad_xhat = torch.ones(40, 6), torch.zeros(40, 6)
    kernels.affine_relu_rows_backward(grad, x, mean, invstd, gamma, beta, grad_xhat)
    expected = torch.zeros(40, 6)
    kernels.affine_relu_rows_backward_reference(grad, x, mean, invstd, gamma, beta, expected)
    assert torch.equal(grad_xhat.isnan(), expected.isnan())  # threshold_backward passes the gradient


@needs_compiler
def test_cache_directory_is_private_and_the_build_is_ours(cache, monkeypatch):
    previous = os.umask(0o002)  # a group-writable umask must not make a shared cache
    try:
        assert kernels.library() is not None
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (built,) = cache.glob("dense_rows-*.so")
    assert built.stat().st_uid == os.getuid() and not built.stat().st_mode & 0o077
    assert not [p for p in cache.iterdir() if p != built]  # the temporary build folder is gone


@needs_compiler
def test_a_cached_file_others_can_write_is_replaced_and_a_broken_one_rebuilt(cache):
    assert kernels.library() is not None
    (built,) = cache.glob("dense_rows-*.so")
    built.chmod(0o775)
    kernels.library.cache_clear()
    assert kernels.library() is not None
    assert not built.stat().st_mode & 0o022
    # a process that has loaded the file gets it from dlopen's cache by path: load the broken one anew
    built.write_bytes(b"not an ELF file")
    code = "from densevision.models import kernels; assert kernels.library() is not None"
    subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert built.stat().st_size > 1000


@needs_compiler
def test_a_file_owned_by_another_user_is_refused(cache, monkeypatch):
    assert kernels.library() is not None
    kernels.library.cache_clear()
    monkeypatch.setattr(os, "getuid", lambda: 12345)  # as if the cache (and its file) were someone else's
    with pytest.warns(RuntimeWarning, match="not a directory owned by this user|refusing"):
        assert kernels.library() is None
    x = _rows(10, 4, 6)
    torch.testing.assert_close(kernels.affine_relu_rows(*x), _reference(*x))


@needs_compiler
def test_cc_is_split_like_a_shell_and_its_identity_keys_the_cache(cache, monkeypatch):
    compiler = shutil.which("cc") or shutil.which("gcc")
    monkeypatch.setenv("CC", f"{compiler} -std=gnu11")
    assert kernels.library() is not None
    monkeypatch.setenv("CC", compiler)
    kernels.library.cache_clear()
    assert kernels.library() is not None
    assert len(list(cache.glob("dense_rows-*.so"))) == 2  # another compiler command, another file


def test_a_hanging_compiler_times_out_into_the_fallback(cache, monkeypatch, tmp_path):
    slow = tmp_path / "slowcc"
    slow.write_text('#!/bin/sh\ncase "$1" in --version) echo slowcc 1.0 ;; *) sleep 30 ;; esac\n')
    slow.chmod(0o755)
    monkeypatch.setenv("CC", str(slow))
    monkeypatch.setattr(kernels, "COMPILE_TIMEOUT_S", 1)
    with pytest.warns(RuntimeWarning, match="slowcc took over 1 s"):
        assert kernels.library() is None


def test_no_home_directory_falls_back(monkeypatch):
    monkeypatch.delenv("DENSEVISION_CACHE", raising=False)
    monkeypatch.delenv("DENSEVISION_KERNELS", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(kernels.Path, "home", staticmethod(no_home))
    kernels.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no cache directory.*set DENSEVISION_CACHE"):
            assert kernels.library() is None
    finally:
        kernels.library.cache_clear()


def test_cpu_key_reads_aarch64_features(monkeypatch, tmp_path):
    info = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes sve\nCPU part\t: 0xd40\n"
    real_read = kernels.Path.read_text

    def read_text(self, *args, **kwargs):
        return info if str(self) == "/proc/cpuinfo" else real_read(self, *args, **kwargs)

    monkeypatch.setattr(kernels.Path, "read_text", read_text)
    key = kernels._cpu_key()
    assert "Features\t: fp asimd evtstrm aes sve" in key and "CPU part\t: 0xd40" in key
