"""Fused element-wise kernels of the dense block's training path, with an ATen fallback.

``dense_rows.c`` is compiled on first use with the system C compiler (``$CC`` or ``cc``; about a second)
into ``$DENSEVISION_CACHE/kernels`` (default ``~/.cache/densevision/kernels``), keyed by the source,
the flags and this CPU's feature flags, and loaded with ``ctypes``. Where no compiler works, or with
``DENSEVISION_KERNELS=0``, every function here computes the same result with ATen ops (a few more
passes over memory): results agree to float rounding either way.

The functions work on "rows": (M, C) views whose channels are contiguous (``stride(1) == 1``) and
whose rows may be strided, i.e. the first C channels of a channels-last block buffer, with per-channel
(C,) vectors: the maps' batch mean and inverse std, and the BN's affine gamma and beta.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("dense_rows.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _cache_dir() -> Path:
    root = os.environ.get("DENSEVISION_CACHE") or Path.home() / ".cache" / "densevision"
    return Path(root) / "kernels"


def _cpu_key() -> str:
    """The CPU's feature flags: ``-march=native`` code must not run on another CPU sharing the cache."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set $CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        proc = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(built)],
                              capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {_SOURCE}:\n{proc.stderr[-2000:]}")
        os.replace(built, target)  # atomic: concurrent processes never load a half-written file


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or ``None`` (disabled, or no working compiler: warns once)."""
    if os.environ.get("DENSEVISION_KERNELS", "1") == "0" or platform.system() != "Linux":
        return None
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode() + _cpu_key().encode()).hexdigest()
    target = _cache_dir() / f"dense_rows-{key[:16]}.so"
    try:
        if not target.exists():
            _compile(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"densevision: fused dense-block kernels unavailable ({err}); training uses ATen "
                      "ops instead (same results, slower). Set DENSEVISION_KERNELS=0 to silence this.",
                      RuntimeWarning, stacklevel=2)
        return None
    lib.affine_relu_rows.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, ctypes.c_int]
    lib.affine_relu_rows_bf16.argtypes = lib.affine_relu_rows.argtypes
    lib.affine_relu_rows_backward.argtypes = [_PTR, _I64, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _PTR,
                                              _PTR, _I64, _PTR, _PTR, ctypes.c_int]
    return lib


def _kernel_ok(*rows: Tensor, dtype: torch.dtype = torch.float32) -> bool:
    return all(t.dtype == dtype and t.device.type == "cpu" and t.dim() == 2 and t.stride(1) == 1
               for t in rows) and library() is not None


def _vectors(*vectors: Tensor) -> list[Tensor]:
    return [v.detach().to(torch.float32).contiguous() for v in vectors]


def normalize_rows(x: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """(x - mean) * invstd as the kernels evaluate it: (M, C) rows, (C,) statistics -> new (M, C)."""
    return (x - mean).mul_(invstd)


def affine_relu_rows(x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """relu(gamma * (x - mean) * invstd + beta): (M, C) rows, (C,) vectors -> new contiguous (M, C) of
    ``x``'s dtype. Compiled for float32 and bfloat16 rows (computed in float32, rounded once)."""
    if x.dtype == torch.bfloat16 and _kernel_ok(x, dtype=torch.bfloat16):
        kernel = library().affine_relu_rows_bf16
    elif _kernel_ok(x):
        kernel = library().affine_relu_rows
    else:
        return torch.addcmul(beta, normalize_rows(x, mean, invstd), gamma).relu_().to(x.dtype)
    vectors = _vectors(mean, invstd, gamma, beta)
    out = torch.empty(x.shape, dtype=x.dtype)
    kernel(x.data_ptr(), x.stride(0), x.shape[0], x.shape[1], *(v.data_ptr() for v in vectors),
           out.data_ptr(), out.stride(0), torch.get_num_threads())
    return out


def affine_relu_rows_backward(
    grad: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor, grad_xhat: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward of ``affine_relu_rows`` for output gradient ``grad`` (M, C).

    Adds the gradient w.r.t. xhat = (x - mean) * invstd, ``gamma * grad * mask``, into ``grad_xhat``
    (M, C rows, in place) and returns (grad_gamma, grad_beta), each (C,).
    """
    if not _kernel_ok(grad, x, grad_xhat):
        xhat = normalize_rows(x, mean, invstd)
        masked = torch.ops.aten.threshold_backward(grad, torch.addcmul(beta, xhat, gamma), 0)
        grad_xhat.addcmul_(masked, gamma)
        return (masked * xhat).sum(0), masked.sum(0)
    vectors = _vectors(mean, invstd, gamma, beta)
    grad_gamma, grad_beta = torch.empty_like(vectors[2]), torch.empty_like(vectors[3])
    library().affine_relu_rows_backward(
        grad.data_ptr(), grad.stride(0), x.data_ptr(), x.stride(0), x.shape[0], x.shape[1],
        *(v.data_ptr() for v in vectors), grad_xhat.data_ptr(), grad_xhat.stride(0),
        grad_gamma.data_ptr(), grad_beta.data_ptr(), torch.get_num_threads(),
    )
    return grad_gamma, grad_beta
