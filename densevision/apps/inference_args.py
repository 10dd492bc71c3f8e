"""The commands' switches for ``densevision.inference.optimize.inference_path`` (predict, extract)."""

from __future__ import annotations

import argparse


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The tools' switches for ``inference_path``: ``--no-optimize``, ``--bf16`` / ``--no-bf16``,
    ``--compile``."""
    group = parser.add_argument_group("inference path (densevision.optimize_for_inference)")
    group.add_argument(
        "--no-optimize", dest="optimize", action="store_false",
        help="run the model as it is (eager float32) instead of optimize_for_inference's copy",
    )
    group.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bfloat16 autocast on or off (default: on where the CPU has AMX / AVX512-BF16, or on CUDA)",
    )
    group.add_argument(
        "--compile", action="store_true",
        help="deprecated: torch.compile with inductor's freezing (minutes to compile, no faster measured)",
    )
