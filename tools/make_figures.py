"""Draw the documentation's figures from the measured files in docs/results/data.

Every figure is rebuilt from its data file when the documentation is built (docs/hooks.py calls
``make_figures``), so a new measurement changes the picture with the number; the PNGs are never committed.
By hand: ``python tools/make_figures.py [DATA_DIR] [OUT_DIR]`` (defaults: docs/results/data, site-figures/).
"""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the build runs headless
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load(data_dir: Path, name: str) -> dict:
    """A measurement file: title, cpu, date, command, notes, columns and rows."""
    return json.loads((data_dir / f"{name}.json").read_text())


def column(table: dict, name: str) -> list:
    index = table["columns"].index(name)
    return [row[index] for row in table["rows"]]


def _caption(ax, table: dict) -> None:
    # Horizontal charts give the plot less width (long row labels): wrap the caption to the figure.
    lines = textwrap.wrap(table["title"], 80) + textwrap.wrap(f"{table['cpu']}, {table['date']}", 95)
    ax.set_title("\n".join(lines), fontsize=8.5, loc="right" if ax.get_ylabel() == "" else "center")


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def grouped_bars(
    table: dict,
    label: str,
    values: list[str],
    ylabel: str,
    out: Path,
    horizontal: bool = False,
    baseline: float | None = None,
) -> Path:
    """One group of bars per row (named by column ``label``), one bar per column in ``values``."""
    labels = [str(v) for v in column(table, label)]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.8) if horizontal else (7.5, 3.8))
    width = 0.8 / len(values)
    for i, name in enumerate(values):
        heights = [v if v is not None else 0.0 for v in column(table, name)]
        positions = [j + (i - (len(values) - 1) / 2) * width for j in range(len(labels))]
        draw = ax.barh if horizontal else ax.bar
        bars = draw(positions, heights, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ticks = range(len(labels))
    if horizontal:
        ax.set_yticks(list(ticks), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_xlim(0, ax.get_xlim()[1] * 1.12)  # room for the value labels right of the bars
    else:
        ax.set_xticks(list(ticks), labels, fontsize=8, rotation=12 if len(labels) > 4 else 0)
        ax.set_ylabel(ylabel)
    if baseline is not None:
        (ax.axvline if horizontal else ax.axhline)(baseline, color="grey", linewidth=0.8, linestyle="--")
    if len(values) > 1 and horizontal:  # below the axes: inside, it would cover the value labels
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(values),
                  frameon=False)
    elif len(values) > 1:
        ax.legend(fontsize=8)
    _caption(ax, table)
    return _save(fig, out)


def training_curve(metrics_csv: Path, meta: dict, out: Path) -> Path:
    """Training loss per step, validation loss and mIoU per epoch, from a run's Lightning metrics.csv."""
    steps, train, epochs, val_loss, miou = [], [], [], [], []
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss_step"):
                steps.append(int(row["step"]))
                train.append(float(row["train/loss_step"]))
            if row.get("val/mIoU"):
                epochs.append(int(row["step"]))
                val_loss.append(float(row["val/loss"]))
                miou.append(float(row["val/mIoU"]))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(steps, train, color="tab:blue", alpha=0.6, linewidth=1, label="train loss (step)")
    ax.plot(epochs, val_loss, "o-", color="tab:orange", label="val loss (epoch)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    right = ax.twinx()
    right.plot(epochs, miou, "s-", color="tab:green", label="val mIoU")
    right.set_ylabel("val mIoU")
    right.set_ylim(0, 1)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    _caption(ax, meta)
    return _save(fig, out)


def depth_lines(table: dict, out: Path) -> Path:
    depth = column(table, "depth")
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name in ("plain activation", "memory-efficient activation", "state"):
        ax.plot(depth, column(table, name), "o-", label=name)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=8)
    _caption(ax, table)
    return _save(fig, out)


def make_figures(data_dir: Path, out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t = lambda name: load(data_dir, name)  # noqa: E731
    levers = t("camvid_levers_1")
    levers["rows"] += t("camvid_levers_2")["rows"][1:]  # the second session's first row repeats the first's
    levers["title"], levers["date"] = (
        "Levers on the unseen street, one change at a time",
        "2026-12-04 and 12-06",
    )
    losses = t("camvid_losses")
    losses["columns"].append("model, loss")
    for row in losses["rows"]:
        row.append(f"{row[0]}\n{row[1]}")
    return [
        training_curve(data_dir / "demo_metrics.csv", t("demo_run"), out_dir / "demo_training_curve.png"),
        grouped_bars(
            t("camvid_side_by_side"),
            "model",
            ["val mIoU", "0006R0 mIoU", "flip TTA mIoU"],
            "mIoU",
            out_dir / "camvid_side_by_side.png",
        ),
        grouped_bars(
            t("camvid_unseen_street"),
            "run",
            ["0006R0 mIoU", "global acc"],
            "score",
            out_dir / "camvid_unseen_street.png",
            horizontal=True,
        ),
        grouped_bars(
            losses,
            "model, loss",
            ["val mIoU", "0006R0 mIoU"],
            "mIoU",
            out_dir / "camvid_losses.png",
            horizontal=True,
        ),
        grouped_bars(
            levers,
            "change",
            ["val mIoU", "0006R0 mIoU"],
            "mIoU",
            out_dir / "camvid_levers.png",
            horizontal=True,
        ),
        grouped_bars(
            t("perf_densenet121_training"),
            "training step",
            ["time vs torchvision plain", "peak memory vs torchvision plain"],
            "ratio (lower is better)",
            out_dir / "perf_densenet121_training.png",
            baseline=1.0,
        ),
        grouped_bars(
            t("perf_densenet121_inference"),
            "path",
            ["throughput vs torchvision fp32 eager"],
            "throughput ratio (higher is better)",
            out_dir / "perf_densenet121_inference.png",
            baseline=1.0,
        ),
        grouped_bars(
            t("perf_family"),
            "model",
            ["training step", "inference time", "peak training memory"],
            "ratio to DenseNet-121 (lower is better)",
            out_dir / "perf_family.png",
            baseline=1.0,
        ),
        depth_lines(t("perf_depth"), out_dir / "perf_depth.png"),
    ]


if __name__ == "__main__":
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "results" / "data"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "site-figures"
    for path in make_figures(data, out):
        print(path)
