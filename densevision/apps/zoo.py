"""``densevision zoo``: every registered model with parameters, GFLOPs, CPU latency and trained results.

- parameters: all of the model's parameters with its default ``num_classes``;
- GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of a batch of one, counting
  2 FLOPs per multiply-add (papers' "FLOPs" for DenseNet are multiply-adds: half these numbers); the
  input is ``--image-size`` square, except CIFAR presets (32 x 32); detectors are measured with their
  own resize set to that size;
- latency: median of ``--repeats`` timed forward passes (batch 1, after one warm-up, ``inference_mode``,
  ``torch.get_num_threads()`` threads) on the CPU this runs on;
- result / config: ``KNOWN_RESULTS``, filled from training reports.

``--markdown FILE`` writes the table into FILE between ``<!-- zoo:start -->`` and ``<!-- zoo:end -->``.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from densevision.models import create_model, list_models
from densevision.models.kinds import model_kind

START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"

# model name -> (metric reached, config that reached it). Only numbers measured by this project's runs.
KNOWN_RESULTS: dict[str, tuple[str, str]] = {
    # densevision fit --config configs/segmentation/<config> (2-core AMD EPYC, 28 min); the side-by-side
    # runs add --data.init_args.holdout_sequence 0006R0 --data.init_args.holdout_split test (README)
    "fcdensenet56": (
        "CamVid, 0006R0 unseen: mIoU 0.378, acc 0.800 (27 epochs in 28 CPU min); val 0.615 (side by side)",
        "segmentation/camvid_cpu_budget_0006R0.yaml",
    ),
    "fchardnet70": (
        "CamVid, 28 CPU min: val mIoU 0.600; 0006R0 unseen 0.359, acc 0.793 (flip TTA 0.366)",
        "segmentation/camvid_cpu_budget_fchardnet70.yaml",
    ),
    "denseaspp_densenet121": (
        "CamVid, 28 CPU min: val mIoU 0.577; 0006R0 unseen 0.334, acc 0.744 (flip TTA 0.338)",
        "segmentation/camvid_denseaspp121_cpu_budget.yaml",
    ),
    "deeplabv3plus_densenet121": (
        "CamVid, 28 CPU min: val mIoU 0.587; 0006R0 unseen 0.360, acc 0.789 (flip TTA 0.361)",
        "segmentation/camvid_deeplabv3plus121_cpu_budget.yaml",
    ),
}


@dataclass
class ZooRow:
    """One model's line of the table."""

    name: str
    kind: str
    params: int
    input_size: int
    gflops: float
    latency_ms: float | None
    result: str = ""
    config: str = ""

    def markdown(self) -> str:
        latency = "-" if self.latency_ms is None else f"{self.latency_ms:.1f}"
        config = f"`{self.config}`" if self.config else "-"
        cells = [f"`{self.name}`", self.kind, f"{self.params / 1e6:.2f}M", str(self.input_size)]
        cells += [f"{self.gflops:.2f}", latency, self.result or "-", config]
        return "| " + " | ".join(cells) + " |"


def model_input(model: nn.Module, image_size: int) -> tuple[object, int]:
    """The forward argument for a batch of one and the side length used (CIFAR presets: 32)."""
    size = 32 if getattr(model, "stem", None) == "cifar" else image_size
    if model_kind(model) == "detection":
        model.transform.min_size, model.transform.max_size = (size,), size
        return [torch.rand(3, size, size)], size
    return torch.randn(1, 3, size, size), size


def count_flops(model: nn.Module, x: Tensor | list[Tensor]) -> int:
    """FLOPs of one forward pass (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops()


def median_latency(model: nn.Module, x: Tensor | list[Tensor], repeats: int) -> float:
    """Median seconds of ``repeats`` forward passes, after one warm-up pass."""
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, image_size: int, repeats: int | None) -> ZooRow:
    """The row of ``name``; ``repeats=None`` skips the latency."""
    model = create_model(name).eval()
    x, size = model_input(model, image_size)
    latency = None if repeats is None else median_latency(model, x, repeats) * 1e3
    result, config = KNOWN_RESULTS.get(name, ("", ""))
    kind = model_kind(model)
    if kind == "dense":  # a classifier returns (N, C), a segmentation model (N, C, H, W)
        kind = "segmentation" if ".segmentation." in type(model).__module__ else "classifier"
    params = sum(p.numel() for p in model.parameters())
    return ZooRow(name, kind, params, size, count_flops(model, x) / 1e9, latency, result, config)


def markdown_table(rows: list[ZooRow], repeats: int | None) -> str:
    threads = torch.get_num_threads()
    latency = f"CPU ms (median of {repeats}, {threads} threads)" if repeats else "CPU ms"
    head = f"| model | task | params | input | GFLOPs | {latency} | result | config |"
    return "\n".join([head, "|---|---|---|---|---|---|---|---|", *(row.markdown() for row in rows)])


_MARKED = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)


def check_markers(path: Path) -> str:
    """The text of ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` lacks the zoo markers.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--markdown file not found: {path}")
    text = path.read_text()
    if not _MARKED.search(text):
        raise ValueError(f"{path}: no '{START}' ... '{END}' markers to put the zoo table between")
    return text


def write_between_markers(path: Path, table: str) -> None:
    """Replace what lies between the zoo markers in ``path`` with ``table`` (see ``check_markers``)."""
    text = check_markers(path)
    path.write_text(_MARKED.sub(lambda _: f"{START}\n{table}\n{END}", text, count=1))


def select_models(patterns: list[str] | None) -> list[str]:
    names = list_models()
    if not patterns:
        return names
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"--models {patterns} matches no registered model; see densevision.list_models()")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=224, help="square input side (CIFAR presets: 32)")
    parser.add_argument("--models", nargs="+", help="shell patterns of model names (default: all)")
    parser.add_argument("--no-latency", action="store_true", help="skip the timing (slow for big models)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per model")
    parser.add_argument("--markdown", type=Path, help="file whose zoo markers receive the table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repeats = None if args.no_latency else args.repeats
    if args.markdown is not None:
        check_markers(args.markdown)  # fail before the slow part
    rows = []
    for name in select_models(args.models):
        rows.append(measure(name, args.image_size, repeats))
        print(rows[-1].markdown(), flush=True)
    table = markdown_table(rows, repeats)
    if args.markdown is not None:
        write_between_markers(args.markdown, table)
        print(f"wrote the table of {len(rows)} models into {args.markdown}")
    else:
        print(table)
    return 0
