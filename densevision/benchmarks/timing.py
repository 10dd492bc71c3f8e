"""Timing helpers: interleaved rounds and median per-round ratios, training-step and inference closures,
and the aligned text tables the benchmarks print.

Every candidate runs one warm-up call, then ``repeats`` rounds in which each candidate runs once in turn
(interleaved, so load from other processes hits all alike); a ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

Row = dict[str, object]


def _loss(out: Tensor | dict[str, Tensor]) -> Tensor:
    if isinstance(out, dict):
        return sum(t.float().square().mean() for t in out.values())
    return out.float().square().mean()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (so the optimizer holds state, as in real training)."""
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def train_step_fn(
    model: nn.Module, batch: Tensor, optimizer: torch.optim.Optimizer | None = None, set_to_none: bool = True
) -> Callable[[], None]:
    """A closure running zero-grad + forward + backward + optimizer step (default: SGD with momentum) on a
    fixed (N, C, H, W) batch; ``set_to_none=False`` zeroes the gradients in place instead of freeing them."""
    model.train()
    opt = optimizer or sgd(model)

    def step() -> None:
        opt.zero_grad(set_to_none=set_to_none)
        _loss(model(batch)).backward()
        opt.step()

    return step


def inference_fn(model: nn.Module, batch: Tensor) -> Callable[[], None]:
    """A closure running ``model(batch)`` without autograd."""

    def run() -> None:
        with torch.inference_mode():
            model(batch)

    return run


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up each, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s time / ``reference``'s time in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))


def print_table(title: str, rows: list[Row]) -> None:
    """Rows of ``{column: value}`` as an aligned text table."""
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if 0 < abs(value) < 1e-3:  # output differences: show their size, not 0.000
            return f"{value:.1e}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
