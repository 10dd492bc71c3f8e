"""The tables of ``densevision benchmark backbone | depth | models | family``.

backbone   densenet121 (or another ImageNet DenseNet) vs torchvision's: training-step time and peak
           training memory, plain and memory-efficient, and inference throughput (eager and
           ``optimize_for_inference``).
depth      peak training memory of CIFAR DenseNet-BC at growing depth, plain vs memory-efficient.
family     registered models side by side: parameters, GFLOPs per image, training-step time and eager
           inference latency as ratios to the first model (interleaved, same run), peak training memory.
models     any registered models: parameters, GFLOPs, step time, peak memory plain / memory-efficient,
           inference throughput eager / optimised, each also against the model run the way torchvision
           runs a DenseNet (``set_fast_path(m, False)``), the baseline where torchvision has no such model.

Each runner takes the options as attributes of ``args`` (the command's parsed arguments: ``batch_size``,
``image_size``, ``repeats``, ``no_memory``, ``compile``, ``camvid``, ``agreement_images``, and per table
``model`` / ``models`` / ``width`` / ``depths`` / ``growth``), prints its tables and returns them as
``{table name: rows}``. Timing, memory and agreement methods: ``timing``, ``memory``, ``agreement``.
"""

from __future__ import annotations

import copy
import statistics
from argparse import Namespace

import torch
from torch import Tensor, nn

from densevision.benchmarks import builders, memory
from densevision.benchmarks.agreement import agreement, agreement_batch, forward_chunks
from densevision.benchmarks.timing import (
    Row,
    inference_fn,
    interleaved_times,
    median_ratio,
    print_table,
    train_step_fn,
)
from densevision.inference.optimize import optimize_for_inference


def run_backbone(args: Namespace) -> dict[str, list[Row]]:
    """densevision vs torchvision for one ImageNet DenseNet: training time, memory, inference."""
    torch.manual_seed(0)
    batch = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    configs = {
        (src, me): builders.build_model(src, args.model, memory_efficient=me)
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
            row.update(memory.peak_train_memory_mib(spec, args.batch_size, args.image_size))
        train_rows.append(row)
    if not args.no_memory:
        tv_plain = train_rows[0]["act_peak_mib"]
        for row in train_rows:
            row["mem_vs_tv_plain"] = row["act_peak_mib"] / max(tv_plain, 1e-6)
    print_table(f"training step, batch {args.batch_size} x {args.image_size}^2 (ratios: densevision / "
                "torchvision, same run)", train_rows)

    check, source = agreement_batch(args.camvid, args.agreement_images, args.image_size, batch)
    infer_rows = inference_rows(args, configs[("densevision", False)], batch, reference, check)
    print_table(f"inference, batch {args.batch_size} x {args.image_size}^2; agreement with eager fp32 on "
                f"{source}", infer_rows)
    return {"training": train_rows, "inference": infer_rows}


def inference_rows(
    args: Namespace, model: nn.Module, batch: Tensor, reference: nn.Module | None, check: Tensor
) -> list[Row]:
    """Throughput of the baseline (``reference``, else ``model`` on its module path), ``model`` eager and
    ``optimize_for_inference`` fp32 / bf16 on (N, C, H, W) ``batch``, with each path's agreement with
    ``model``'s eager fp32 outputs on ``check``."""
    model.eval()
    candidates: dict[str, nn.Module] = {}
    if reference is not None:
        candidates["torchvision eager fp32"] = reference.eval()
    else:
        candidates["reference eager fp32"] = builders.ReferenceModel(model).eval()
    candidates["densevision eager fp32"] = model
    candidates["densevision optimized fp32"] = optimize_for_inference(model, bf16=False, compile=args.compile)
    optimized = optimize_for_inference(model, compile=args.compile)
    if optimized.bf16:
        candidates["densevision optimized bf16"] = optimized
    expected = forward_chunks(model, check, args.batch_size)
    times = interleaved_times({k: inference_fn(m, batch) for k, m in candidates.items()}, args.repeats)
    base = next(iter(candidates))
    rows = []
    for name, m in candidates.items():
        row: Row = {"path": name, "images_per_s": args.batch_size / statistics.median(times[name]),
                    "speedup_vs_" + base.split()[0]: 1 / median_ratio(times, name, base)}
        out = forward_chunks(m, check, args.batch_size)
        if isinstance(out, Tensor) and isinstance(expected, Tensor):
            row.update(agreement(out, expected, tuple(check.shape[-2:])))
        rows.append(row)
    return rows


def run_depth(args: Namespace) -> dict[str, list[Row]]:
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
            mem = memory.peak_train_memory_mib(spec, args.batch_size, args.image_size)
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


def run_models(args: Namespace) -> dict[str, list[Row]]:
    """Params, GFLOPs, step time, peak memory and inference speed-up of registered densevision models."""
    torch.manual_seed(0)
    width = args.width or args.image_size
    size = f"{args.image_size}x{width}"
    batch = torch.randn(args.batch_size, 3, args.image_size, width)
    check, source = agreement_batch(args.camvid, args.agreement_images, args.image_size, batch)
    rows, infer_rows = [], []
    for name in args.models:
        plain, efficient = (
            builders.build_model("densevision", name, memory_efficient=me) for me in (False, True)
        )
        efficient.load_state_dict(plain.state_dict())
        row: Row = {"model": name, "params_m": builders.params_m(plain),
                    "gflops": builders.count_gflops(plain, batch)}
        reference = builders.ReferenceModel(copy.deepcopy(plain))
        times = interleaved_times(
            {"reference": train_step_fn(reference, batch), "plain": train_step_fn(plain, batch),
             "me": train_step_fn(efficient, batch)}, args.repeats
        )
        row["step_s"] = statistics.median(times["plain"])
        row["time_vs_reference"] = median_ratio(times, "plain", "reference")
        row["me_time_ratio"] = median_ratio(times, "me", "plain")
        if not args.no_memory:
            ref_mem, plain_mem, me_mem = (
                memory.peak_train_memory_mib({"source": src, "name": name, "memory_efficient": me},
                                             args.batch_size, args.image_size, width)
                for src, me in (("reference", False), ("densevision", False), ("densevision", True))
            )
            row["state_mib"] = plain_mem["state_mib"]
            row["reference_act_mib"] = ref_mem["act_peak_mib"]
            row["plain_act_mib"], row["me_act_mib"] = plain_mem["act_peak_mib"], me_mem["act_peak_mib"]
            row["me_mem_ratio"] = me_mem["act_peak_mib"] / max(plain_mem["act_peak_mib"], 1e-6)
            row["me_mem_vs_reference"] = me_mem["act_peak_mib"] / max(ref_mem["act_peak_mib"], 1e-6)
        infer = inference_rows(args, plain, batch, None, check)
        row["optimized_speedup"] = max(r[next(k for k in r if k.startswith("speedup"))] for r in infer)
        rows.append(row)
        infer_rows += [{"model": name, **r} for r in infer]
    print_table(f"models, batch {args.batch_size} x {size}", rows)
    print_table(f"inference, batch {args.batch_size} x {size}; agreement with eager fp32 on "
                f"{source}", infer_rows)
    return {"models": rows, "inference": infer_rows}


def run_family(args: Namespace) -> dict[str, list[Row]]:
    """Registered models side by side, every time a ratio to the first model's in the same run."""
    torch.manual_seed(0)
    width = args.width or args.image_size
    batch = torch.randn(args.batch_size, 3, args.image_size, width)
    models = {name: builders.build_model("densevision", name) for name in args.models}
    train = interleaved_times({name: train_step_fn(m, batch) for name, m in models.items()}, args.repeats)
    for model in models.values():
        model.eval()
    infer = interleaved_times({name: inference_fn(m, batch) for name, m in models.items()}, args.repeats)
    base = args.models[0]
    rows = []
    for name, model in models.items():
        row: Row = {"model": name, "params_m": builders.params_m(model),
                    "gflops_per_image": builders.count_gflops(model, batch[:1]),
                    "step_s": statistics.median(train[name]),
                    "step_vs_" + base: median_ratio(train, name, base),
                    "infer_ms_per_image": 1000 * statistics.median(infer[name]) / args.batch_size,
                    "infer_vs_" + base: median_ratio(infer, name, base)}
        if not args.no_memory:
            spec = {"source": "densevision", "name": name, "memory_efficient": False}
            row["act_peak_mib"] = memory.peak_train_memory_mib(spec, args.batch_size, args.image_size, width)[
                "act_peak_mib"]
        rows.append(row)
    if not args.no_memory:
        for row in rows:
            row["mem_vs_" + base] = row["act_peak_mib"] / max(rows[0]["act_peak_mib"], 1e-6)
    print_table(f"side by side, batch {args.batch_size} x {args.image_size}x{width}, eager fp32 (ratios: "
                f"model / {base}, interleaved in one run)", rows)
    return {"family": rows}
