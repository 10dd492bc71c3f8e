"""Fused element-wise kernels of the dense block's fast paths: ``torch.library`` custom ops
(``densevision::affine_relu_rows``, ``densevision::affine_relu_rows_backward``) whose implementation is
compiled C where it can be had and the equivalent ATen code (the reference) otherwise.

``dense_rows.c`` is compiled on first use with the system C compiler (``$CC``, split like a shell would,
or ``cc``; about a second, at most ``COMPILE_TIMEOUT_S``) into ``$DENSEVISION_CACHE/kernels`` (default
``~/.cache/densevision/kernels``), keyed by the source, the flags, the compiler's ``--version`` and this
CPU's feature flags (``-march=native`` code must not run on another CPU sharing the cache), and loaded
with ``ctypes``. The cache directory is private (0700); a cached library is loaded only if it is a
regular file owned by this user and writable by nobody else, a build lands under its final name by an
atomic rename, and a cached file that fails to load is rebuilt once. Where no kernel can be had (no
compiler, a failed build, an unsafe cache, no home directory, not Linux) or with
``DENSEVISION_KERNELS=0``, the ops run their ATen code after one warning: results agree to float
rounding either way, and nothing here raises.

The ops work on "rows": (M, C) views whose channels are contiguous (``stride(1) == 1``) and whose rows
may be strided, i.e. the first C channels of a channels-last block buffer, with per-channel (C,)
vectors: the maps' batch mean and inverse std, and the BN's affine gamma and beta.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("dense_rows.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
COMPILE_TIMEOUT_S = 60


class _Unavailable(Exception):
    """No kernel can be had; the message says why."""


def _cache_dir() -> Path:
    root = os.environ.get("DENSEVISION_CACHE")
    if not root:
        try:
            root = Path.home() / ".cache" / "densevision"
        except (RuntimeError, KeyError) as err:  # no resolvable home directory
            raise _Unavailable(f"no cache directory: {err}; set DENSEVISION_CACHE") from err
    return Path(root) / "kernels"


def _private_dir(path: Path) -> Path:
    """``path`` created 0700 (parents as the umask allows), or checked: ours, and nobody else may write."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as err:
        raise _Unavailable(f"cannot create {path}: {err}") from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise _Unavailable(f"{path} is not a directory owned by this user (uid {os.getuid()})")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _trusted(path: Path) -> bool:
    """A regular file (not a link) owned by this user that nobody else can write."""
    info = path.lstat()
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _compiler() -> list[str]:
    words = shlex.split(os.environ.get("CC", ""))
    if not words:
        found = shutil.which("cc") or shutil.which("gcc")
        if found is None:
            raise _Unavailable("no C compiler found (set $CC)")
        words = [found]
    return words


def _compiler_identity(compiler: list[str]) -> str:
    try:
        proc = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=False,
                              timeout=COMPILE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as err:
        raise _Unavailable(f"{shlex.join(compiler)} --version failed: {err}") from err
    return proc.stdout + proc.stderr


def _cpu_key() -> str:
    """The CPU's feature flags (x86 ``flags``, aarch64 ``Features``) and model identification."""
    keep = ("flags", "Features", "CPU implementer", "CPU architecture", "CPU variant", "CPU part",
            "model name")
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name = line.split(":", 1)[0].strip()
            if name in keep and name not in found:
                found[name] = line
    except OSError:
        pass
    return "\n".join([platform.machine(), platform.processor(), *found.values()])


def _compile(compiler: list[str], target: Path) -> None:
    """Build into a private temporary folder beside ``target``, then rename: concurrent processes never
    load a half-written file, and a failed build leaves nothing under the final name."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        try:
            proc = subprocess.run([*compiler, *_FLAGS, str(_SOURCE), "-o", str(built)],
                                  capture_output=True, text=True, check=False, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise _Unavailable(f"{shlex.join(compiler)} took over {COMPILE_TIMEOUT_S} s") from err
        except OSError as err:
            raise _Unavailable(f"cannot run {shlex.join(compiler)}: {err}") from err
        if proc.returncode != 0:
            raise _Unavailable(f"{shlex.join(compiler)} failed on {_SOURCE}:\n{proc.stderr[-2000:]}")
        os.chmod(built, 0o700)
        os.replace(built, target)


def _load(compiler: list[str], target: Path) -> ctypes.CDLL:
    if target.exists() and not _trusted(target):
        if target.lstat().st_uid != os.getuid():
            raise _Unavailable(f"refusing {target}: owned by uid {target.lstat().st_uid}, not this user")
        _compile(compiler, target)  # ours but writable by others: replace it with a private build
    elif not target.exists():
        _compile(compiler, target)
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        _compile(compiler, target)  # a broken or truncated cached file: rebuild once
        try:
            return ctypes.CDLL(str(target))
        except OSError as err:
            raise _Unavailable(f"cannot load {target}: {err}") from err


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or ``None`` (disabled, or none can be had: warns once, never raises)."""
    if os.environ.get("DENSEVISION_KERNELS", "1") == "0" or platform.system() != "Linux":
        return None
    try:
        compiler = _compiler()
        key = hashlib.sha256("\0".join(
            [_SOURCE.read_text(), *_FLAGS, *compiler, _compiler_identity(compiler), _cpu_key()]
        ).encode()).hexdigest()
        lib = _load(compiler, _private_dir(_cache_dir()) / f"dense_rows-{key[:16]}.so")
    except Exception as err:  # whatever goes wrong, the ATen code is there: never fail a training step
        warnings.warn(f"densevision: fused dense-block kernels unavailable ({err}); the fast paths use ATen "
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


def affine_relu_rows_reference(
    x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor
) -> Tensor:
    """The ATen code of ``affine_relu_rows`` (NaN stays NaN, as in ``torch.relu``)."""
    return torch.addcmul(beta, normalize_rows(x, mean, invstd), gamma).relu_().to(x.dtype).contiguous()


@torch.library.custom_op("densevision::affine_relu_rows", mutates_args=(), device_types="cpu")
def affine_relu_rows(x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """relu(gamma * (x - mean) * invstd + beta): (M, C) rows, (C,) vectors -> new contiguous (M, C) of
    ``x``'s dtype. Compiled for float32 and bfloat16 rows (computed in float32, rounded once)."""
    if x.dtype == torch.bfloat16 and _kernel_ok(x, dtype=torch.bfloat16):
        kernel = library().affine_relu_rows_bf16
    elif _kernel_ok(x):
        kernel = library().affine_relu_rows
    else:
        return affine_relu_rows_reference(x, mean, invstd, gamma, beta)
    vectors = _vectors(mean, invstd, gamma, beta)
    out = torch.empty(x.shape, dtype=x.dtype)
    kernel(x.data_ptr(), x.stride(0), x.shape[0], x.shape[1], *(v.data_ptr() for v in vectors),
           out.data_ptr(), out.stride(0), torch.get_num_threads())
    return out


@affine_relu_rows.register_fake
def _(x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    return x.new_empty(x.shape)


def affine_relu_rows_backward_reference(
    grad: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor, grad_xhat: Tensor
) -> tuple[Tensor, Tensor]:
    """The ATen code of ``affine_relu_rows_backward``: the gradient passes where the pre-activation is
    not ``<= 0`` (so through NaN, as ``threshold_backward`` does after ``torch.relu``)."""
    xhat = normalize_rows(x, mean, invstd)
    masked = torch.ops.aten.threshold_backward(grad, torch.addcmul(beta, xhat, gamma), 0)
    grad_xhat.addcmul_(masked, gamma)
    return (masked * xhat).sum(0), masked.sum(0)


@torch.library.custom_op("densevision::affine_relu_rows_backward", mutates_args=("grad_xhat",),
                         device_types="cpu")
def affine_relu_rows_backward(
    grad: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor, grad_xhat: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward of ``affine_relu_rows`` for output gradient ``grad`` (M, C).

    Adds the gradient w.r.t. xhat = (x - mean) * invstd, ``gamma * grad * mask``, into ``grad_xhat``
    (M, C rows, in place) and returns (grad_gamma, grad_beta), each (C,).
    """
    if not _kernel_ok(grad, x, grad_xhat):
        return affine_relu_rows_backward_reference(grad, x, mean, invstd, gamma, beta, grad_xhat)
    vectors = _vectors(mean, invstd, gamma, beta)
    grad_gamma, grad_beta = torch.empty_like(vectors[2]), torch.empty_like(vectors[3])
    library().affine_relu_rows_backward(
        grad.data_ptr(), grad.stride(0), x.data_ptr(), x.stride(0), x.shape[0], x.shape[1],
        *(v.data_ptr() for v in vectors), grad_xhat.data_ptr(), grad_xhat.stride(0),
        grad_gamma.data_ptr(), grad_beta.data_ptr(), torch.get_num_threads(),
    )
    return grad_gamma, grad_beta


@affine_relu_rows_backward.register_fake
def _(grad, x, mean, invstd, gamma, beta, grad_xhat):
    return gamma.new_empty(gamma.shape), beta.new_empty(beta.shape)
