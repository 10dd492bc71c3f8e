"""Run an exported model on a CPU runtime: PyTorch, ONNX Runtime or OpenVINO, behind one call.

``load_backend(folder, backend)`` returns a function from a normalised (N, 3, H, W) float32 batch to the
model's float32 output ((N, C, H, W) logits for a segmenter, (N, C) for a classifier), so the pre- and
post-processing around it is the same whatever runs the network. An export folder holds one or more of:

- ``model.onnx``: ONNX Runtime (and OpenVINO when there is no IR);
- ``model.xml`` + ``model.bin``: OpenVINO's IR; ``model_int8.xml`` + ``.bin``: the NNCF int8 IR
  (``densevision.inference.quantize``), chosen with ``precision="int8"``;
- ``model.safetensors`` + ``densevision.json``: the PyTorch model, rebuilt by ``densevision.load_model``.

Precision: ``None`` picks the fastest that keeps the decisions: bfloat16 where the CPU multiplies bf16
natively (AMX / AVX512-BF16), else float32. ``"bf16"`` asked for on a CPU without bf16 falls back to float32
with a warning (OpenVINO would otherwise do so silently, and the emulated bf16 of PyTorch is slower than
float32); on such CPUs ``"int8"`` (OpenVINO) is the fast path.

OpenVINO runs one compiled model with one infer request, reused for every call; the input array is handed
to the runtime without a copy (``share_inputs``) and the output is copied once, so a result stays valid
after the next call. With ``pipelined=True`` it is compiled for throughput instead (OpenVINO's
``THROUGHPUT`` hint: several streams, each running one image on its share of the cores) with one infer
request per stream: the function may then be called from that many threads at once
(``run.parallel_calls``), which is how ``densevision predict`` keeps every core busy on batches of one.
"""

from __future__ import annotations

import importlib
import queue
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from densevision.inference.cpu import cpu_has_fast_bf16
from densevision.log import get_logger

logger = get_logger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
ONNX_FILE = "model.onnx"
OPENVINO_XML = "model.xml"
OPENVINO_INT8_XML = "model_int8.xml"
SAFETENSORS_FILE = "model.safetensors"
_PRECISIONS = {"torch": ("fp32", "bf16"), "onnxruntime": ("fp32",), "openvino": ("fp32", "bf16", "int8")}

Backend = Callable[[np.ndarray], np.ndarray]


class MissingBackendError(ImportError, ValueError):
    """A runtime's package is not installed; the message names the extra that installs it (a ``ValueError``
    too, so the commands print it as a one-line user error)."""


def require(package: str, backend: str | None = None) -> ModuleType:
    """Import ``package`` (``openvino``, ``onnxruntime``, ``nncf``) or say in one line how to install it.

    Raises:
        MissingBackendError: the package is not installed.
    """
    try:
        return importlib.import_module(package)
    except ImportError as error:
        what = f"the {backend} backend" if backend else "this step"
        raise MissingBackendError(
            f"{what} needs the {package} package, which is not installed: pip install densevision[deploy]"
        ) from error


def resolve_precision(backend: str, precision: str | None) -> str:
    """The precision ``backend`` will run: ``precision`` checked against what it offers (``"f32"`` is read
    as ``"fp32"``), or the default (bf16 where the CPU has it, else fp32); bf16 on a CPU without it falls
    back to fp32 with a warning.

    Raises:
        ValueError: ``backend`` or ``precision`` is not offered.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    allowed = _PRECISIONS[backend]
    if precision is None:
        return "bf16" if "bf16" in allowed and cpu_has_fast_bf16() else "fp32"
    precision = "fp32" if precision == "f32" else precision
    if precision not in allowed:
        hint = "; use --backend openvino for bf16 or int8" if backend == "onnxruntime" else ""
        raise ValueError(
            f"the {backend} backend runs precision {' or '.join(allowed)}, got {precision!r}{hint}"
        )
    if precision == "bf16" and not cpu_has_fast_bf16():
        logger.warning(
            "this CPU has no AMX / AVX512-BF16: running %s in float32 instead of bf16 (int8 through OpenVINO "
            "is the fast path here)", backend,
        )
        return "fp32"
    return precision


def _model_file(folder: Path, backend: str, precision: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such export folder (write one with densevision export)")
    if backend == "openvino":
        names = [OPENVINO_INT8_XML] if precision == "int8" else [OPENVINO_XML, ONNX_FILE]
    else:
        names = [ONNX_FILE] if backend == "onnxruntime" else [SAFETENSORS_FILE]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    present = sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".xml", ".safetensors"))
    fix = "export it with --int8" if precision == "int8" else f"export with --format {backend}"
    raise FileNotFoundError(
        f"{folder} has no {' or '.join(names)} for the {backend} backend (it holds "
        f"{', '.join(present) or 'no model file'}): {fix}, or pick a backend for the files it has"
    )


def load_backend(
    folder: Path,
    backend: str,
    *,
    precision: str | None = None,
    threads: int | None = None,
    pipelined: bool = False,
) -> Backend:
    """A function running the exported model in ``folder`` on ``backend``.

    Args:
        folder: an export folder (see the module docstring for its files).
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        precision: ``"fp32"`` (or ``"f32"``), ``"bf16"`` (torch, openvino), ``"int8"`` (openvino, from
            ``model_int8.xml``); ``None``: bf16 where the CPU has it, else fp32.
        threads: intra-op threads (``None``: the runtime's default). For ``torch`` this sets PyTorch's
            process-wide thread count.
        pipelined: openvino: compile for throughput, callable from ``run.parallel_calls`` threads at once
            (see the module docstring); one call alone is then slower. Other backends ignore it.

    Returns:
        ``run(x)``: (N, 3, H, W) float32 normalised images -> the model's first output as float32
        ((N, C, H, W) logits for a segmenter, (N, C) for a classifier), an array the caller owns.

    Raises:
        ValueError: unknown backend or precision.
        FileNotFoundError: the folder or the backend's model file is missing.
        MissingBackendError: the runtime is not installed (an ``ImportError``).
    """
    from densevision.inference.model_folder import check_backend, read_metadata

    folder = Path(folder)
    precision = resolve_precision(backend, precision)
    check_backend(folder, read_metadata(folder), backend)  # the files are checked against their hashes
    path = _model_file(folder, backend, precision)
    if backend == "openvino":
        return openvino_backend(path, precision=precision, threads=threads, pipelined=pipelined)
    if backend == "onnxruntime":
        return onnxruntime_backend(path, threads=threads)
    from densevision.inference.model_folder import load_model

    return torch_backend(load_model(folder), precision=precision, threads=threads)


class OpenVINORequests:
    """A compiled OpenVINO model behind ``run(x) -> logits`` that up to ``parallel_calls`` threads may call
    at once, each call on an infer request of its own (the requests are reused; a call waits for a free
    one). The runtime releases the GIL while it infers, so the calling threads run in parallel."""

    def __init__(self, compiled: object, parallel_calls: int = 1) -> None:
        self.parallel_calls = max(1, parallel_calls)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.parallel_calls):
            self._free.put(compiled.create_infer_request())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = self._free.get()
        try:
            # share_inputs: the runtime reads the caller's array in place; the one copy is the result's own
            request.infer({0: np.ascontiguousarray(x, dtype=np.float32)}, share_inputs=True,
                          share_outputs=True)  # fmt: skip
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            self._free.put(request)


def openvino_backend(
    model_file: Path, *, precision: str = "fp32", threads: int | None = None, pipelined: bool = False
) -> Backend:
    """OpenVINO on the CPU: ``model_file`` (IR ``.xml`` or ``.onnx``) compiled once at ``precision``
    (``"fp32"``, ``"bf16"``; ``"int8"`` runs a quantised IR with bf16 or fp32 for what stays in float),
    for latency with one infer request reused, or with ``pipelined`` for throughput with one request per
    stream (an :class:`OpenVINORequests`). See ``load_backend`` for the call."""
    ov = require("openvino", "openvino")
    hints = importlib.import_module("openvino.properties.hint")
    props = importlib.import_module("openvino.properties")
    float_type = "bf16" if precision == "bf16" or (precision == "int8" and cpu_has_fast_bf16()) else "f32"
    config = {
        hints.inference_precision: ov.Type.bf16 if float_type == "bf16" else ov.Type.f32,
        hints.performance_mode: (
            hints.PerformanceMode.THROUGHPUT if pipelined else hints.PerformanceMode.LATENCY
        ),
    }
    if threads:
        config[props.inference_num_threads] = threads
    compiled = ov.Core().compile_model(str(model_file), "CPU", config)
    requests = compiled.get_property(props.optimal_number_of_infer_requests) if pipelined else 1
    return OpenVINORequests(compiled, requests)


def onnxruntime_backend(model_file: Path, *, threads: int | None = None) -> Backend:
    """ONNX Runtime's CPU provider on ``model_file``, float32. See ``load_backend`` for the call."""
    ort = require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out = session.run([output_name], {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out.astype(np.float32, copy=False)

    return run


def torch_backend(model, *, precision: str = "fp32", threads: int | None = None) -> Backend:
    """A PyTorch module (or any callable on tensors) as a backend: wrapped by ``optimize_for_inference``
    (bf16 autocast when ``precision="bf16"``) if it is an ``nn.Module``. See ``load_backend`` for the
    call."""
    import torch

    from densevision.inference.optimize import optimize_for_inference

    if threads:
        torch.set_num_threads(threads)
    if isinstance(model, torch.nn.Module):
        model = optimize_for_inference(model, bf16=precision == "bf16")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return out.float().numpy()

    return run
