"""``densevision benchmark deploy``: every way to run a model on this CPU, side by side in one run.

For each model (DenseNet-121 at batch 8, 224x224; FC-DenseNet56 and FC-HarDNet-70 at batch 1, 360x480),
with the same random weights everywhere: the torchvision-style eager float32 path as the baseline
(torchvision's own model where it has one, else the densevision model on its module path,
``set_fast_path(model, False)``); densevision eager, ``optimize_for_inference`` fp32 / bf16 (bf16 only where
the CPU multiplies it natively) and compiled (inductor with freezing); ONNX Runtime fp32; OpenVINO f32 /
bf16 / int8 (NNCF post-training quantisation), each once through ``load_backend`` and once as raw OpenVINO
on the same file (``compile_model`` + one infer request, as ``../shared/bench/peer_runtimes.py`` does), so
the cost of the wrapping shows. The runtimes run the baseline's graph exported with ``torch.onnx.export``
(opset 17) and converted by OpenVINO's own converter.

Each row gives images/s (median over interleaved rounds, so load from other processes hits every path
alike), the ratio to the baseline's images/s in the same round (median), and the agreement with the
baseline's outputs on the timing batch: top-1 for a classifier, pixels for a segmenter.
"""

from __future__ import annotations

import copy
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from densevision.benchmarks import builders
from densevision.benchmarks.timing import Row, interleaved_times, print_table
from densevision.inference.backends import (
    ONNX_FILE,
    MissingBackendError,
    onnxruntime_backend,
    openvino_backend,
    require,
)
from densevision.inference.optimize import cpu_has_fast_bf16, optimize_for_inference

DEFAULT_SETUPS: dict[str, tuple[int, int, int]] = {
    "densenet121": (8, 224, 224),
    "fcdensenet56": (1, 360, 480),
    "fchardnet70": (1, 360, 480),
}
_QUICK_SETUP = (1, 64, 96)
_SEGMENTER_SETUP = (1, 360, 480)
_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_info() -> dict[str, object]:
    """The CPU as ``lscpu`` names it, the flags that decide the fast path, and a short slug for file
    names (``intel-amx``, ``amd-avx512-bf16``, ``intel-avx2`` ...)."""
    name = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next(line.split(":", 1)[1].strip()
                    for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    present = [flag for flag in _FLAGS if flag in flags]
    vendor = "amd" if "AMD" in name.upper() else "intel" if "INTEL" in name.upper() else "cpu"
    isa = next((label for flag, label in (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"),
                                         ("avx512f", "avx512"), ("avx2", "avx2")) if flag in flags), "other")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")  # oneDNN (PyTorch's, OpenVINO's) limited to an older ISA
    if cap:
        name = f"{name}, oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA)"
        isa = f"capped-{cap.lower()}"
    return {"model_name": name, "flags": present, "slug": f"{vendor}-{isa}", "bf16": cpu_has_fast_bf16()}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("onnxruntime", "openvino", "nncf"):
        try:
            versions[package] = require(package).__version__.split("-")[0]
        except MissingBackendError:
            versions[package] = "not installed"
    return versions


def _command() -> str:
    args = sys.argv[sys.argv.index("deploy") + 1:] if "deploy" in sys.argv else []
    return " ".join(["densevision benchmark deploy", *args])


def _baseline(name: str, model: nn.Module) -> tuple[str, nn.Module]:
    """torchvision's model with ``model``'s weights where torchvision has ``name``, else ``model`` on its
    module path."""
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        reference = builders.build_model("torchvision", name)
        reference.load_state_dict(model.state_dict())
        return "torchvision eager fp32", reference.eval()
    return "module path eager fp32", builders.ReferenceModel(copy.deepcopy(model)).eval()


def _export(model: nn.Module, x: torch.Tensor, folder: Path) -> None:
    """``model.onnx`` (opset 17, TorchScript exporter as the peers use it) and OpenVINO's ``model.xml``
    with the layers reading the image kept in f32, as ``densevision export`` writes it."""
    from densevision.inference.quantize import input_layers, keep_in_full_precision

    ov = require("openvino")
    with torch.no_grad():
        torch.onnx.export(model, (x,), folder / "model.onnx", input_names=["image"], output_names=["logits"],
                          opset_version=17, dynamo=False)
    ov_model = ov.convert_model(folder / "model.onnx")
    keep_in_full_precision(ov_model, input_layers(ov_model))
    ov.save_model(ov_model, folder / "model.xml", compress_to_fp16=False)


def _raw_openvino(model_file: Path, precision: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """What a user of OpenVINO writes by hand (the peer script's call): the yardstick for the backend."""
    ov = require("openvino")
    compiled = ov.Core().compile_model(str(model_file), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def _torch_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


def _candidates(
    name: str, model: nn.Module, x: torch.Tensor, folder: Path, *, threads: int, calibration_images: int,
    compile: bool,
) -> dict[str, Callable[[], object]]:
    baseline_name, baseline = _baseline(name, model)
    bf16 = cpu_has_fast_bf16()
    fns: dict[str, Callable[[], object]] = {baseline_name: _torch_fn(baseline, x),
                                            "densevision eager fp32": _torch_fn(model, x)}
    fns["densevision optimized fp32"] = _torch_fn(optimize_for_inference(model, bf16=False), x)
    if bf16:
        fns["densevision optimized bf16"] = _torch_fn(optimize_for_inference(model, bf16=True), x)
    if compile:
        label = "densevision optimized " + ("bf16" if bf16 else "fp32") + " + compile (inductor, freezing)"
        fns[label] = _torch_fn(optimize_for_inference(model, bf16=bf16, compile=True), x)
    xn = x.numpy()
    try:
        _export(baseline, x, folder)
    except MissingBackendError as error:
        print(f"skipping the runtimes: {error}")
        return fns
    try:
        ort_run = onnxruntime_backend(folder / ONNX_FILE, threads=threads)
        fns["onnxruntime fp32 (load_backend)"] = lambda: ort_run(xn)
    except MissingBackendError as error:
        print(f"skipping ONNX Runtime: {error}")
    precisions = ["fp32", "bf16"] if bf16 else ["fp32"]
    if calibration_images:
        from densevision.inference.quantize import quantize_openvino_int8

        rng = np.random.default_rng(0)
        calibration = (rng.standard_normal(xn.shape, dtype=np.float32) for _ in range(calibration_images))
        quantize_openvino_int8(folder / "model.xml", calibration, folder / "model_int8.xml",
                               subset_size=calibration_images)
        precisions.append("int8")
    for precision in precisions:
        hint = "f32" if precision == "fp32" or (precision == "int8" and not bf16) else "bf16"
        xml = folder / ("model_int8.xml" if precision == "int8" else "model.xml")
        backend = openvino_backend(xml, precision=precision, threads=threads)
        raw = _raw_openvino(xml, hint, threads)
        fns[f"openvino {precision} (raw)"] = lambda raw=raw: raw(xn)
        fns[f"openvino {precision} (load_backend)"] = lambda backend=backend: backend(xn)
    return fns


def _agreement(out: object, expected: torch.Tensor) -> tuple[float, float]:
    out = torch.as_tensor(np.asarray(out)).float()
    return ((out.argmax(1) == expected.argmax(1)).float().mean().item(),
            (out - expected).abs().max().item())


def run_model(
    name: str, *, batch: int, size: tuple[int, int], repeats: int, threads: int, calibration_images: int,
    compile: bool,
) -> list[Row]:
    """The rows of one model's table (see the module docstring)."""
    torch.manual_seed(0)
    model = builders.build_model("densevision", name).eval()
    x = torch.randn(batch, 3, *size)
    with tempfile.TemporaryDirectory() as tmp:
        fns = _candidates(name, model, x, Path(tmp), threads=threads, calibration_images=calibration_images,
                          compile=compile)
        times = interleaved_times(fns, repeats)
        outputs = {path: fn() for path, fn in fns.items()}
    base = next(iter(fns))
    expected = torch.as_tensor(np.asarray(outputs[base])).float()
    kind = "top1_agree" if expected.dim() == 2 else "pixel_agree"
    rows = []
    for path in fns:
        agree, diff = _agreement(outputs[path], expected)
        ratios = [b / t for t, b in zip(times[path], times[base], strict=True)]
        row: Row = {"path": path, "images_per_s": batch / statistics.median(times[path]),
                    "vs_baseline": statistics.median(ratios), kind: agree, "max_abs_diff": diff,
                    "backend_vs_raw": ""}
        if path.endswith("(load_backend)") and path.startswith("openvino"):
            raw = path.replace("(load_backend)", "(raw)")
            row["backend_vs_raw"] = statistics.median(
                r / t for t, r in zip(times[path], times[raw], strict=True))
        rows.append(row)
    return rows


def predict_throughput(
    model: Path, frames: Path, backends: tuple[str, ...] = ("torch", "onnxruntime", "openvino"),
    threads: int = 2,
) -> list[Row]:
    """``densevision predict --model MODEL --backend B`` end to end on a folder of frames (process start,
    reading, resizing, writing masks and overlays included): frames per second of wall time per backend.
    A backend whose run fails gets its error's last line instead of a figure."""
    from densevision.inference.model_folder import BACKEND_FORMATS, METADATA_FILE, read_metadata

    count = sum(1 for p in frames.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if (model / METADATA_FILE).is_file():  # an export folder runs on the backends of its format only
        fmt = read_metadata(model)["format"]
        backends = tuple(b for b in backends if fmt in BACKEND_FORMATS[b])
    rows = []
    for backend in backends:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "densevision", "predict", "--model", str(model), "--backend",
                       backend, "--input", str(frames), "--output", out, "--no-progress"]
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            seconds = time.perf_counter() - start
        row: Row = {"backend": backend, "frames": count, "seconds": seconds,
                    "images_per_s": count / seconds if proc.returncode == 0 else ""}
        lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("(densevision --")]
        row["error"] = "" if proc.returncode == 0 else (lines or ["?"])[-1]
        rows.append(row)
    return rows


def run_deploy(
    models: list[str], *, repeats: int = 5, threads: int = 2, calibration_images: int = 16,
    compile: bool = False, quick: bool = False, camvid_frames: Path | None = None,
    predict_model: Path | None = None,
) -> dict[str, object]:
    """Every model's table, printed and returned with the CPU, versions, date and command.

    Args:
        models: registered names; each runs at its ``DEFAULT_SETUPS`` batch and size (a segmenter not
            listed there: batch 1 at 360x480; ``quick``: batch 1 at 64x96).
        repeats: interleaved timing rounds.
        threads: threads of PyTorch, ONNX Runtime and OpenVINO alike.
        calibration_images: random calibration batches for OpenVINO int8 (0: no int8 rows).
        compile: also time ``optimize_for_inference(compile=True)``.
        camvid_frames: with ``predict_model``, also time ``densevision predict`` on these frames.
        predict_model: an export folder (or checkpoint) for that end-to-end run.

    Returns:
        ``{"cpu", "versions", "threads", "date", "command", "tables": {model: rows}, "predict": rows}``.
    """
    torch.set_num_threads(threads)
    report: dict[str, object] = {
        "cpu": cpu_info(), "versions": _versions(), "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(),
        "tables": {},
    }
    cpu = report["cpu"]
    print(f"{cpu['model_name']} ({', '.join(cpu['flags'])}), {threads} threads, torch {torch.__version__}")
    for name in models:
        batch, height, width = _QUICK_SETUP if quick else DEFAULT_SETUPS.get(name, _SEGMENTER_SETUP)
        rows = run_model(name, batch=batch, size=(height, width), repeats=repeats, threads=threads,
                         calibration_images=calibration_images, compile=compile)
        report["tables"][name] = {"batch": batch, "size": [height, width], "rows": rows}
        print_table(f"{name}, batch {batch}, {height}x{width}, {threads} threads, random weights (ratios and "
                    f"agreement: vs {rows[0]['path']}, same run)", rows)
    if camvid_frames is not None and predict_model is not None:
        report["predict"] = predict_throughput(predict_model, camvid_frames, threads=threads)
        print_table(f"densevision predict --model {predict_model} on {camvid_frames}, end to end",
                    report["predict"])
    return report


def results_page(report: dict[str, object]) -> str:
    """The markdown results page: CPU, date, command, one table per model, and which backend to pick."""
    cpu = report["cpu"]
    lines = ["# Deployment: every CPU runtime side by side", "",
             f"CPU: **{cpu['model_name']}** (`lscpu`), flags {', '.join(cpu['flags']) or 'none of note'}; "
             f"{report['threads']} threads; {report['date']}.", "",
             f"Command: `{report['command'].strip()}`. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "Random weights, the same everywhere; images/s is the median of interleaved rounds; the ratio "
             "is to the first row (the torchvision-style fp32 eager path) in the same round; agreement is "
             "with that row's outputs on the timing batch.", ""]
    for name, table in report["tables"].items():
        rows = table["rows"]
        kind = "top1_agree" if "top1_agree" in rows[0] else "pixel_agree"
        lines += [f"## {name}, batch {table['batch']}, {table['size'][0]}x{table['size'][1]}", "",
                  f"| path | images/s | vs baseline | {kind.replace('_', ' ')} | backend / raw OpenVINO |",
                  "|---|---|---|---|---|"]
        for row in rows:
            raw = f"{row['backend_vs_raw']:.2f}" if isinstance(row["backend_vs_raw"], float) else ""
            lines.append(f"| {row['path']} | {row['images_per_s']:.2f} | {row['vs_baseline']:.2f} | "
                         f"{row[kind]:.4f} | {raw} |")
        lines.append("")
    if report.get("predict"):
        lines += ["## `densevision predict` end to end", "", "| backend | frames | images/s |",
                  "|---|---|---|"]
        lines += [f"| {r['backend']} | {r['frames']} | "
                  f"{r['error'] if r['error'] else format(r['images_per_s'], '.2f')} |"
                  for r in report["predict"]]  # fmt: skip
        lines += ["", "Every backend end to end on one trained run, against `--backend torch`: "
                  "[predict-end-to-end.md](predict-end-to-end.md).", ""]  # fmt: skip
    lines += ["## Which backend on which CPU", "", *_advice(report), ""]
    return "\n".join(lines)


def _advice(report: dict[str, object]) -> list[str]:
    cpu = report["cpu"]
    lines = [
        "- **AMX or AVX512-BF16 (Xeon 4th gen and later, AMD Zen 4 and later)**: OpenVINO in bf16 (the "
        "default precision there): it needs no calibration and keeps closer to float32 than int8, which can "
        "be faster still (measured below).",
        "- **AVX2, or AVX-512 without bf16 (older Xeon, AMD Zen 2/3, desktops)**: OpenVINO int8 "
        "(`densevision export --int8`, NNCF calibration on the run's training images); else OpenVINO f32.",
        "- **ONNX Runtime** where OpenVINO is not available (non-x86 CPUs, or a runtime already in use).",
        "- **PyTorch** (`--backend torch`, `optimize_for_inference`) for GPUs, debugging, and where no "
        "export is wanted.",
    ]
    for name, table in report["tables"].items():
        rows = table["rows"]
        kind = "top1_agree" if "top1_agree" in rows[0] else "pixel_agree"
        good = [row for row in rows if row[kind] >= 0.99] or rows[:1]
        best = max(good, key=lambda row: row["images_per_s"])
        lines.append(f"- Measured here ({cpu['slug']}), {name}: fastest with >= 99 % agreement is "
                     f"**{best['path']}**, {best['images_per_s']:.2f} images/s, {best['vs_baseline']:.2f}x "
                     "the baseline.")
    return lines
