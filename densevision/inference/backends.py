"""Runtimes behind ``densevision predict --model EXPORT_DIR --backend torch|onnxruntime|openvino``.

Every backend is a function ``(N, 3, H, W) float32 normalised images -> (N, C, H, W) float32 logits``;
preprocessing and postprocessing around it are the one path of ``densevision.inference.preprocessing``.
``onnxruntime`` and ``openvino`` are the ``deploy`` extra (``pip install densevision[deploy]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from densevision.inference.model_folder import ModelFolderError, check_backend, load_model, read_metadata

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("f32", "fp32", "bf16", "int8")


class MissingExtraError(ModuleNotFoundError, ValueError):
    """A backend's runtime is not installed (a user error: one line naming the extra to install)."""


def require(module: str, backend: str | None = None) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = f"--backend {backend}" if backend else "this step"
        raise MissingExtraError(
            f"{what} needs {module}, which is not installed: pip install densevision[deploy]"
        ) from err


def _model_file(folder: Path, metadata: dict, backend: str, precision: str | None) -> Path:
    check_backend(folder, metadata, backend)
    if backend == "openvino" and precision == "int8":
        if metadata["format"] != "openvino" or not (folder / "model_int8.xml").is_file():
            raise ModelFolderError(f"{folder} has no model_int8.xml: export it with --format openvino --int8")
        return folder / "model_int8.xml"
    return folder / {"onnx": "model.onnx", "openvino": "model.xml", "safetensors": "model.safetensors"}[
        metadata["format"]
    ]


def load_backend(
    folder: Path, backend: str, *, precision: str | None = None, threads: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """The model of an export folder on ``backend``.

    Args:
        folder: written by ``densevision export --checkpoint RUN.ckpt`` (checked: ``read_metadata``).
        backend: ``torch`` (a safetensors folder), ``onnxruntime`` (onnx) or ``openvino`` (openvino or onnx).
        precision: ``f32`` (or ``fp32``), ``bf16`` (OpenVINO's inference precision hint, bfloat16
            autocast for torch; ONNX Runtime runs float32) or ``int8`` (OpenVINO: ``model_int8.xml``);
            None = the runtime's default (OpenVINO: bfloat16 where the CPU has it; torch, ONNX Runtime:
            float32).
        threads: intra-op threads; None = the runtime's default.

    Returns:
        ``(N, 3, H, W) float32 -> (N, C, H, W) float32`` (the first output).

    Raises:
        ModelFolderError: a corrupt folder, or a format the backend does not run.
        MissingExtraError: the runtime is not installed.
        ValueError: an unknown backend or precision.
    """
    folder = Path(folder)
    if backend not in BACKENDS or (precision is not None and precision not in PRECISIONS):
        raise ValueError(f"backend {backend!r} / precision {precision!r}: choose {BACKENDS} / {PRECISIONS}")
    metadata = read_metadata(folder)
    precision = "f32" if precision == "fp32" else precision
    path = _model_file(folder, metadata, backend, precision)
    if backend == "onnxruntime":
        ort = require("onnxruntime", backend)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
    if backend == "openvino":
        ov = require("openvino", backend)
        # None: OpenVINO's own choice (bfloat16 on CPUs with AMX / AVX512-BF16)
        hint = {None: None, "bf16": "bf16"}.get(precision, "f32")
        config = {} if hint is None else {"INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        # np.array copies: the request reuses its output buffer on the next call
        return lambda x: np.array(request.infer([np.ascontiguousarray(x, np.float32)])[0], np.float32)
    model = load_model(folder)
    if threads:
        torch.set_num_threads(threads)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).float().numpy()

    return run
