"""What this CPU offers the inference paths, read without importing any runtime: the PyTorch path
(``densevision.inference.optimize``) and the exported runtimes (``densevision.inference.backends``) choose
their precision from it."""

from __future__ import annotations

import functools
import os
from pathlib import Path

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


# oneDNN's ISA levels below the first with bf16 instructions (``ONEDNN_MAX_CPU_ISA``, honoured by PyTorch's
# and OpenVINO's oneDNN): with one of these set, bf16 has no kernels however new the CPU is.
_ISA_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AMX-BF16 or AVX512-BF16 (per ``/proc/cpuinfo``) and ``ONEDNN_MAX_CPU_ISA``
    does not cap oneDNN below them: elsewhere bf16 is emulated and slower than float32."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_WITHOUT_BF16:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_CPU_FLAGS)
