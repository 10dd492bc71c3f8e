"""Peak memory of one training step, measured in a fresh Python subprocess per configuration.

The subprocess builds the model and an SGD-with-momentum optimizer and runs one warm-up step (gradients,
momentum buffers, oneDNN caches). Gradients are then zeroed in place, so parameters, buffers, gradients
and optimizer state (``state_mib``) are resident before the measured steps, as when training with
``zero_grad(set_to_none=False)``. The primary figure, ``act_peak_mib``, is the most bytes PyTorch's
allocator holds live during one training step above what was live before it: activations saved for
backward, their gradients and workspace, free of malloc fragmentation and of CPU load. On CPU it is read
from ``torch.profiler``'s memory events (each allocation carries the running total of bytes allocated
since profiling began and still live); on CUDA from ``torch.cuda.max_memory_allocated``. Alongside,
``rss_mib`` is the resident-set growth over another step (``malloc_trim``, reset the kernel's high-water
mark with ``echo 5 > /proc/self/clear_refs``, then ``VmHWM - VmRSS``; ``getrusage`` growth where it cannot
be reset): what the OS sees, glibc's fragmentation included. It exceeds the allocator peak mostly through
glibc's dynamic mmap threshold (freed large blocks raise it up to 32 MiB, after which activation-sized
blocks come from the fragmenting heap); with it pinned, e.g. ``MALLOC_MMAP_THRESHOLD_=1048576`` in the
environment, it came within 9% of ``act_peak_mib``.
"""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from densevision.benchmarks import builders
from densevision.benchmarks.timing import sgd, train_step_fn


def peak_allocated_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Most bytes PyTorch's allocator on ``device`` holds live while ``fn`` runs, above those live before.

    CPU: the maximum running total of ``torch.profiler``'s memory events, which counts blocks allocated
    since profiling began and not yet freed (freeing a block allocated earlier is not subtracted, so
    ``fn`` should not free what it did not allocate). CUDA: the caching allocator's peak statistic.

    Raises:
        ValueError: ``device`` is neither CPU nor CUDA.
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
    ``rss_mib`` (resident-set growth).

    Raises:
        RuntimeError: the subprocess failed (its stderr's tail is in the message).
    """
    payload = json.dumps({"spec": spec, "batch_size": batch_size, "image_size": image_size, "width": width})
    code = "import sys; from densevision.benchmarks.memory import memory_child; memory_child(sys.argv[1])"
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
    model = builders.build_model(**spec)
    batch = torch.randn(batch_size, 3, image_size, width or image_size)
    optimizer = sgd(model)
    step = train_step_fn(model, batch, optimizer, set_to_none=False)
    step()
    result = {"state_mib": state_bytes(model, optimizer) / 2**20, "rss_mib": _rss_growth_mib(step)}
    result["act_peak_mib"] = peak_allocated_bytes(step, batch.device) / 2**20
    return result


def memory_child(payload: str) -> None:
    """The subprocess's entry point: measure the JSON ``payload``'s configuration, print the result as
    JSON on the last line."""
    args = json.loads(payload)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    sizes = (args["batch_size"], args["image_size"], args.get("width"))
    print(json.dumps(measure_train_memory(args["spec"], *sizes)))
