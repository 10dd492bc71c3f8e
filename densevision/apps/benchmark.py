"""``densevision benchmark``: time and memory of densevision models against torchvision, in one run.

Subcommands:
    backbone   densenet121 (or ``--model``) vs torchvision's: training-step time and peak training memory,
               plain and memory-efficient, and inference throughput (eager and ``optimize_for_inference``).
    depth      peak training memory of CIFAR DenseNet-BC at growing depth, plain vs memory-efficient.
    family     registered models side by side (default DenseNet-121, RDNet-T, VoVNet-39, HarDNet-68; or
               ``--models fchardnet70 fcdensenet56 fcdensenet103``): parameters, GFLOPs per image,
               training-step time and eager inference latency as ratios to the first model (interleaved,
               same run), peak training memory (allocator peak, fresh subprocess per model).
    models     any registered models (``--models fcdensenet103 ...``): parameters, GFLOPs, step time,
               peak memory plain / memory-efficient, inference throughput eager / optimised, each also
               against the model run the way torchvision runs a DenseNet (``set_fast_path(m, False)``: NCHW,
               per-layer concatenation, module by module), the baseline where torchvision has no such
               model.

Method. Times: every candidate runs one warm-up step, then ``--repeats`` rounds in which each candidate
runs once in turn (interleaved, so load from other processes hits all alike); a ratio is the median of the
per-round ratios.

Peak memory: each configuration runs in a fresh Python subprocess, which builds the model and an
SGD-with-momentum optimizer and runs one warm-up step (gradients, momentum buffers, oneDNN caches).
Gradients are then zeroed in place, so parameters, buffers, gradients and optimizer state (``state_mib``)
are resident before the measured steps, as when training with ``zero_grad(set_to_none=False)``. The
primary figure, ``act_peak_mib``, is the most bytes PyTorch's allocator holds live during one training
step above what was live before it: activations saved for backward, their gradients and workspace, free
of malloc fragmentation and of CPU load. On CPU it is read from ``torch.profiler``'s memory events (each
allocation carries the running total of bytes allocated since profiling began and still live); on CUDA
from ``torch.cuda.max_memory_allocated``. Alongside, ``rss_mib`` is the resident-set growth over another
step (``malloc_trim``, reset the kernel's high-water mark with ``echo 5 > /proc/self/clear_refs``, then
``VmHWM - VmRSS``; ``getrusage`` growth where it cannot be reset): what the OS sees, glibc's fragmentation
included. It exceeds the allocator peak mostly through glibc's dynamic mmap threshold (freed large blocks
raise it up to 32 MiB, after which activation-sized blocks come from the fragmenting heap); with it pinned,
e.g. ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment, it came within 9% of ``act_peak_mib``.
GFLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (one forward, 1 multiply-add = 2 FLOPs).

Agreement of each inference path with the eager float32 model (the fp32 reference), for the inference
tables: classifiers (N, classes) get top-1 agreement; segmentation models ((N, classes, H, W) at the input
size) get the share of pixels with the same class and the mIoU of the path's label map against the fp32
label map (torchmetrics ``MulticlassJaccardIndex``, classes absent from both maps not counted); all get the
largest absolute output difference. They are measured on ``--agreement-images`` CamVid val images (shorter
side resized to the benchmark size, centre crop, ImageNet normalisation) when
``../shared/data/camvid`` (``--camvid``) exists, else on the random timing batch; the table title says
which. The models are randomly initialised (no weights are downloaded), so this measures how far the
fast path moves a network's decisions, not the accuracy of a trained one.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torchmetrics.classification import MulticlassJaccardIndex

from densevision.apps.zoo import count_flops
from densevision.datasets.image_io import find_images, read_rgb_image, to_tensor
from densevision.datasets.transforms import MEAN, STD
from densevision.inference.optimize import optimize_for_inference
from densevision.models.layers import set_fast_path

Row = dict[str, object]
# ../shared/data beside the folder the command runs in (the repository), as the tests find it;
# DENSEVISION_SHARED_DATA overrides
_SHARED_DATA = Path(os.environ.get("DENSEVISION_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def build_model(
    source: str, name: str, memory_efficient: bool = False, depth: int = 100, growth: int = 12
) -> nn.Module:
    """A model by source (``densevision`` / ``torchvision`` / ``reference``: a densevision model run on its
    module path) and registered name; ``densenet_bc`` is a CIFAR DenseNet-BC of any ``depth`` and
    ``growth``."""
    if source == "reference":
        return ReferenceModel(build_model("densevision", name, memory_efficient, depth, growth))
    if source == "densevision" and name == "densenet_bc":
        from densevision.models.backbones.densenet import cifar_densenet

        return cifar_densenet(depth, growth, bottleneck=True, memory_efficient=memory_efficient)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, memory_efficient=memory_efficient)
    if source == "densevision":
        from densevision.models import create_model

        # only asked for when wanted: some presets (FC-HarDNet) have no memory-efficient mode
        return create_model(name, **({"memory_efficient": True} if memory_efficient else {}))
    raise ValueError(f"model source must be 'densevision', 'torchvision' or 'reference', got {source!r}")


class ReferenceModel(nn.Module):
    """Runs ``model`` on its module path (``set_fast_path(model, False)`` for each call, restored after, so
    that the wrapped model can be shared with a fast candidate): the torchvision-style baseline for
    models torchvision lacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        set_fast_path(self.model, False)
        try:
            return self.model(x)
        finally:
            set_fast_path(self.model, True)


def _loss(out: Tensor | dict[str, Tensor]) -> Tensor:
    if isinstance(out, dict):
        return sum(t.float().square().mean() for t in out.values())
    return out.float().square().mean()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def train_step_fn(
    model: nn.Module, batch: Tensor, optimizer: torch.optim.Optimizer | None = None, set_to_none: bool = True
) -> Callable[[], None]:
    """A closure running zero-grad + forward + backward + optimizer step (default: SGD with momentum) on a
    fixed batch; ``set_to_none=False`` zeroes the gradients in place instead of freeing them."""
    model.train()
    opt = optimizer or sgd(model)

    def step() -> None:
        opt.zero_grad(set_to_none=set_to_none)
        _loss(model(batch)).backward()
        opt.step()

    return step


def inference_fn(model: nn.Module, batch: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(batch)

    return run


def interleaved_times(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
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
    return statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))


def peak_allocated_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Most bytes PyTorch's allocator on ``device`` holds live while ``fn`` runs, above those live before.

    CPU: the maximum running total of ``torch.profiler``'s memory events, which counts blocks allocated
    since profiling began and not yet freed (freeing a block allocated earlier is not subtracted, so
    ``fn`` should not free what it did not allocate). CUDA: the caching allocator's peak statistic.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda' devices, got {device}")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # The typed event tree is what torch.profiler's own memory timeline reads allocations from.
    totals = [
        event.typed[1].total_allocated
        for event in _walk(prof.profiler.kineto_results.experimental_event_tree())
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu"
    ]
    return max(totals, default=0)


def _walk(events: list) -> Iterator:
    for event in events:
        yield event
        yield from _walk(event.children)


def peak_train_memory_mib(
    spec: dict[str, object], batch_size: int, image_size: int, width: int | None = None
) -> dict[str, float]:
    """Memory of one training step, measured in a fresh subprocess (MiB): ``act_peak_mib`` (allocator peak
    above the resting state), ``state_mib`` (parameters, buffers, gradients, optimizer state) and
    ``rss_mib`` (resident-set growth)."""
    payload = json.dumps({"spec": spec, "batch_size": batch_size, "image_size": image_size, "width": width})
    code = "import sys; from densevision.apps.benchmark import _memory_child; _memory_child(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, payload], capture_output=True, text=True, check=False, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_growth_mib(fn: Callable[[], object]) -> float:
    if _reset_peak_rss():
        before = _status_mib("VmRSS")
        fn()
        return _status_mib("VmHWM") - before
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the model's parameters, buffers and gradients and the optimizer's state tensors."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, Tensor)]
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors}
    return sum(unique.values())


def measure_train_memory(
    spec: dict[str, object], batch_size: int, image_size: int, width: int | None = None
) -> dict[str, float]:
    """What ``peak_train_memory_mib`` reports, measured in this process (see the module docstring)."""
    torch.manual_seed(0)
    model = build_model(**spec)
    batch = torch.randn(batch_size, 3, image_size, width or image_size)
    optimizer = sgd(model)
    step = train_step_fn(model, batch, optimizer, set_to_none=False)
    step()
    result = {"state_mib": state_bytes(model, optimizer) / 2**20, "rss_mib": _rss_growth_mib(step)}
    result["act_peak_mib"] = peak_allocated_bytes(step, batch.device) / 2**20
    return result


def _memory_child(payload: str) -> None:
    args = json.loads(payload)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    sizes = (args["batch_size"], args["image_size"], args.get("width"))
    print(json.dumps(measure_train_memory(args["spec"], *sizes)))


def count_gflops(model: nn.Module, batch: Tensor) -> float:
    """Forward GFLOPs for ``batch`` (eval mode; counted as the zoo counts them)."""
    return count_flops(model.eval(), batch) / 1e9


def _params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


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


def run_backbone(args: argparse.Namespace) -> dict[str, list[Row]]:
    """densevision vs torchvision for one ImageNet DenseNet: training time, memory, inference."""
    torch.manual_seed(0)
    batch = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    configs = {
        (src, me): build_model(src, args.model, memory_efficient=me)
        for me in (False, True)
        for src in ("torchvision", "densevision")
    }
    reference = configs[("torchvision", False)]
    for model in configs.values():
        model.load_state_dict(reference.state_dict())
    steps = {f"{src}{' me' if me else ''}": train_step_fn(m, batch) for (src, me), m in configs.items()}
    times = interleaved_times(steps, args.repeats)
    train_rows = []
    for (src, me), _ in configs.items():
        name = f"{src}{' me' if me else ''}"
        row: Row = {"model": args.model, "source": src, "memory_efficient": me,
                    "step_s": statistics.median(times[name]),
                    "time_vs_tv_plain": median_ratio(times, name, "torchvision")}
        if me:
            row["time_vs_tv_me"] = median_ratio(times, name, "torchvision me")
        if not args.no_memory:
            spec = {"source": src, "name": args.model, "memory_efficient": me}
            row.update(peak_train_memory_mib(spec, args.batch_size, args.image_size))
        train_rows.append(row)
    if not args.no_memory:
        tv_plain = train_rows[0]["act_peak_mib"]
        for row in train_rows:
            row["mem_vs_tv_plain"] = row["act_peak_mib"] / max(tv_plain, 1e-6)
    print_table(f"training step, batch {args.batch_size} x {args.image_size}^2 (ratios: densevision / "
                "torchvision, same run)", train_rows)

    check, source = agreement_batch(args, batch)
    infer_rows = _inference_rows(args, configs[("densevision", False)], batch, reference, check)
    print_table(f"inference, batch {args.batch_size} x {args.image_size}^2; agreement with eager fp32 on "
                f"{source}", infer_rows)
    return {"training": train_rows, "inference": infer_rows}


def camvid_batch(root: Path, count: int, size: int) -> Tensor:
    """(count, 3, size, size) normalised CamVid val images, evenly spaced over the sequence: shorter side
    resized to ``size`` (bilinear, antialiased), then centre-cropped.

    Raises:
        FileNotFoundError: ``root / "val"`` holds no images.
    """
    files = find_images(root / "val")
    picked = files[:: max(1, len(files) // count)][:count]
    images = [TF.center_crop(TF.resize(to_tensor(read_rgb_image(f)), [size], antialias=True), [size, size])
              for f in picked]
    return TF.normalize(torch.stack(images), list(MEAN), list(STD))


def agreement_batch(args: argparse.Namespace, timing_batch: Tensor) -> tuple[Tensor, str]:
    """The images the inference paths are compared on, and their description for the table title.

    Raises:
        FileNotFoundError: ``--camvid`` names a folder that does not exist.
    """
    if args.camvid == "none" or (args.camvid is None and not (_SHARED_DATA / "camvid").is_dir()):
        return timing_batch, "the random timing batch"
    camvid = Path(args.camvid) if args.camvid is not None else _SHARED_DATA / "camvid"
    if not camvid.is_dir():
        raise FileNotFoundError(f"--camvid {camvid}: no such folder (expected CamVid with a val/ folder)")
    images = camvid_batch(camvid, args.agreement_images, args.image_size)
    return images, f"{len(images)} CamVid val images (shorter side resized to {args.image_size}, centre crop)"


def _forward_chunks(model: nn.Module, images: Tensor, batch_size: int) -> Tensor | dict[str, Tensor]:
    with torch.inference_mode():
        outs = [model(chunk) for chunk in images.split(batch_size)]
    if isinstance(outs[0], Tensor):
        return torch.cat(outs).float()
    return {k: torch.cat([o[k] for o in outs]).float() for k in outs[0]}


def agreement(out: Tensor, expected: Tensor, image_size: tuple[int, ...]) -> Row:
    """How far ``out`` is from the fp32 reference ``expected``: max |difference|, and top-1 agreement
    (classifier, (N, classes)) or pixel agreement and mIoU against the reference label map (segmentation,
    (N, classes, H, W) at the input size)."""
    row: Row = {"max_abs_diff": (out - expected).abs().max().item()}
    if out.dim() == 2:
        row["top1_agree"] = (out.argmax(1) == expected.argmax(1)).float().mean().item()
    elif out.dim() == 4 and tuple(out.shape[-2:]) == tuple(image_size):
        labels, reference = out.argmax(1), expected.argmax(1)
        row["pixel_agree"] = (labels == reference).float().mean().item()
        miou = MulticlassJaccardIndex(num_classes=out.shape[1], average="macro")
        row["miou_vs_fp32"] = miou(labels, reference).item()
    return row


def _inference_rows(
    args: argparse.Namespace, model: nn.Module, batch: Tensor, reference: nn.Module | None,
    check: Tensor,
) -> list[Row]:
    model.eval()
    candidates: dict[str, nn.Module] = {}
    if reference is not None:
        candidates["torchvision eager fp32"] = reference.eval()
    else:
        candidates["reference eager fp32"] = ReferenceModel(model).eval()
    candidates["densevision eager fp32"] = model
    candidates["densevision optimized fp32"] = optimize_for_inference(model, bf16=False, compile=args.compile)
    optimized = optimize_for_inference(model, compile=args.compile)
    if optimized.bf16:
        candidates["densevision optimized bf16"] = optimized
    expected = _forward_chunks(model, check, args.batch_size)
    times = interleaved_times({k: inference_fn(m, batch) for k, m in candidates.items()}, args.repeats)
    base = next(iter(candidates))
    rows = []
    for name, m in candidates.items():
        row: Row = {"path": name, "images_per_s": args.batch_size / statistics.median(times[name]),
                    "speedup_vs_" + base.split()[0]: 1 / median_ratio(times, name, base)}
        out = _forward_chunks(m, check, args.batch_size)
        if isinstance(out, Tensor) and isinstance(expected, Tensor):
            row.update(agreement(out, expected, tuple(check.shape[-2:])))
        rows.append(row)
    return rows


def run_depth(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Peak training memory of CIFAR DenseNet-BC at growing depth: linear with memory_efficient.

    ``state_mib`` (parameters, gradients, momentum) grows quadratically with depth whatever the mode (layer
    l's 1x1 conv has 4k x C_l weights), so the activation peak above it is what must grow linearly.
    """
    rows = []
    for depth in args.depths:
        row: Row = {"depth": depth, "growth": args.growth}
        for me in (False, True):
            spec = {"source": "densevision", "name": "densenet_bc", "memory_efficient": me,
                    "depth": depth, "growth": args.growth}
            mem = peak_train_memory_mib(spec, args.batch_size, args.image_size)
            mode = "me" if me else "plain"
            row["state_mib"] = mem["state_mib"]
            row[f"{mode}_act_mib"] = mem["act_peak_mib"]
            row[f"{mode}_act_mib_per_layer"] = mem["act_peak_mib"] / depth
            row[f"{mode}_rss_mib"] = mem["rss_mib"]
        rows.append(row)
    print_table(f"training-step memory vs depth, DenseNet-BC k={args.growth}, batch {args.batch_size} x "
                f"{args.image_size}^2: state = params + grads + momentum, act = allocator peak above it "
                "(flat act MiB/layer = linear growth), rss = resident-set growth", rows)
    return {"depth": rows}


def run_models(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Params, GFLOPs, step time, peak memory and inference speed-up of registered densevision models."""
    torch.manual_seed(0)
    width = args.width or args.image_size
    size = f"{args.image_size}x{width}"
    batch = torch.randn(args.batch_size, 3, args.image_size, width)
    check, source = agreement_batch(args, batch)
    rows, infer_rows = [], []
    for name in args.models:
        plain, efficient = (build_model("densevision", name, memory_efficient=me) for me in (False, True))
        efficient.load_state_dict(plain.state_dict())
        row: Row = {"model": name, "params_m": _params_m(plain), "gflops": count_gflops(plain, batch)}
        reference = ReferenceModel(copy.deepcopy(plain))
        times = interleaved_times(
            {"reference": train_step_fn(reference, batch), "plain": train_step_fn(plain, batch),
             "me": train_step_fn(efficient, batch)}, args.repeats
        )
        row["step_s"] = statistics.median(times["plain"])
        row["time_vs_reference"] = median_ratio(times, "plain", "reference")
        row["me_time_ratio"] = median_ratio(times, "me", "plain")
        if not args.no_memory:
            ref_mem, plain_mem, me_mem = (
                peak_train_memory_mib({"source": src, "name": name, "memory_efficient": me},
                                      args.batch_size, args.image_size, width)
                for src, me in (("reference", False), ("densevision", False), ("densevision", True))
            )
            row["state_mib"] = plain_mem["state_mib"]
            row["reference_act_mib"] = ref_mem["act_peak_mib"]
            row["plain_act_mib"], row["me_act_mib"] = plain_mem["act_peak_mib"], me_mem["act_peak_mib"]
            row["me_mem_ratio"] = me_mem["act_peak_mib"] / max(plain_mem["act_peak_mib"], 1e-6)
            row["me_mem_vs_reference"] = me_mem["act_peak_mib"] / max(ref_mem["act_peak_mib"], 1e-6)
        infer = _inference_rows(args, plain, batch, None, check)
        row["optimized_speedup"] = max(r[next(k for k in r if k.startswith("speedup"))] for r in infer)
        rows.append(row)
        infer_rows += [{"model": name, **r} for r in infer]
    print_table(f"models, batch {args.batch_size} x {size}", rows)
    print_table(f"inference, batch {args.batch_size} x {size}; agreement with eager fp32 on "
                f"{source}", infer_rows)
    return {"models": rows, "inference": infer_rows}


def run_family(args: argparse.Namespace) -> dict[str, list[Row]]:
    """Registered models side by side, every time a ratio to the first model's in the same run."""
    torch.manual_seed(0)
    width = args.width or args.image_size
    batch = torch.randn(args.batch_size, 3, args.image_size, width)
    models = {name: build_model("densevision", name) for name in args.models}
    train = interleaved_times({name: train_step_fn(m, batch) for name, m in models.items()}, args.repeats)
    for model in models.values():
        model.eval()
    infer = interleaved_times({name: inference_fn(m, batch) for name, m in models.items()}, args.repeats)
    base = args.models[0]
    rows = []
    for name, model in models.items():
        row: Row = {"model": name, "params_m": _params_m(model),
                    "gflops_per_image": count_gflops(model, batch[:1]),
                    "step_s": statistics.median(train[name]),
                    "step_vs_" + base: median_ratio(train, name, base),
                    "infer_ms_per_image": 1000 * statistics.median(infer[name]) / args.batch_size,
                    "infer_vs_" + base: median_ratio(infer, name, base)}
        if not args.no_memory:
            spec = {"source": "densevision", "name": name, "memory_efficient": False}
            row["act_peak_mib"] = peak_train_memory_mib(spec, args.batch_size, args.image_size, width)[
                "act_peak_mib"]
        rows.append(row)
    if not args.no_memory:
        for row in rows:
            row["mem_vs_" + base] = row["act_peak_mib"] / max(rows[0]["act_peak_mib"], 1e-6)
    print_table(f"side by side, batch {args.batch_size} x {args.image_size}x{width}, eager fp32 (ratios: "
                f"model / {base}, interleaved in one run)", rows)
    return {"family": rows}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densevision benchmark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("backbone", "densevision vs torchvision DenseNet"),
                           ("depth", "peak memory vs depth (DenseNet-BC, CIFAR size)"),
                           ("models", "registered models: params, GFLOPs, time, memory, inference"),
                           ("family", "models side by side: params, GFLOPs, time and memory ratios")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--image-size", type=int, default=None)
        p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median ratio)")
        p.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke run")
        p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
        p.add_argument("--compile", action="store_true", help="torch.compile the optimised inference path")
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
        p.add_argument("--json", type=Path, default=None, help="also write the tables to this JSON file")
        if name not in ("depth", "family"):
            p.add_argument("--camvid", default=None,
                           help="CamVid folder for the agreement images (default: ../shared/data/camvid "
                           "where it exists; 'none': the random timing batch)")
            p.add_argument("--agreement-images", type=int, default=4,
                           help="CamVid val images the inference paths are compared on")
        if name == "backbone":
            p.add_argument("--model", default="densenet121", help="an ImageNet DenseNet both libraries have")
        if name == "depth":
            p.add_argument("--depths", type=int, nargs="+", default=[100, 250, 400])
            p.add_argument("--growth", type=int, default=12)
        if name in ("models", "family"):
            default = ["densenet121"] if name == "models" else ["densenet121", "rdnet_tiny", "vovnet39",
                                                                "hardnet68"]
            p.add_argument("--models", nargs="+", default=default)
            p.add_argument("--width", type=int, default=None,
                           help="image width (default: --image-size, square), e.g. 480 for CamVid's 360x480")
    return parser


_DEFAULT_SIZES = {"backbone": (8, 224), "depth": (16, 32), "models": (2, 224), "family": (8, 224)}
_QUICK_SIZES = {"backbone": (2, 64), "depth": (2, 32), "models": (2, 64), "family": (2, 64)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    batch, size = (_QUICK_SIZES if args.quick else _DEFAULT_SIZES)[args.command]
    args.batch_size = args.batch_size or batch
    args.image_size = args.image_size or size
    if args.quick:
        args.repeats = 1
        if args.command == "depth":
            args.depths = [d for d in args.depths if d <= 100] or args.depths[:1]
    sizes = (args.repeats, args.batch_size, args.image_size, getattr(args, "agreement_images", 1),
             1 if getattr(args, "width", None) is None else args.width)
    if min(sizes) < 1:
        raise SystemExit("--repeats, --batch-size, --image-size, --width and --agreement-images must be "
                         "positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    runner = {"backbone": run_backbone, "depth": run_depth, "models": run_models,
              "family": run_family}[args.command]
    tables = runner(args)
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0
