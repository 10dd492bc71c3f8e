"""What this CPU offers the inference paths, read without importing any runtime: the PyTorch path
(``densevision.inference.optimize``) and the exported runtimes (``densevision.inference.backends``) choose
their precision from it."""

from __future__ import annotations

import functools
from pathlib import Path

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
