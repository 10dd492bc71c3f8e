"""Lower precision for OpenVINO models: bf16 with the image's first layer kept in f32, and post-training
int8 quantisation with NNCF for CPUs without bf16.

On CPUs that multiply int8 natively (AVX512-VNNI, AVX-VNNI, AMX-INT8) but not bf16 (e.g. AMD AVX2 or
older Xeons), an int8 IR is the fastest way to run a network on OpenVINO; on AMX CPUs it is about as fast
as bf16. NNCF's post-training quantisation (``nncf.quantize``) measures the activation ranges on a few
calibration batches of the run's own training images (preprocessed exactly as for prediction) and inserts
FakeQuantize nodes that OpenVINO's CPU plugin executes as int8 kernels.

The layers that read the image (a network's stem convolution) are where low precision moves a
segmenter's decisions most: the normalised image rounded to bf16 keeps 8 significant bits, and an int8
quantiser over the signed image range fewer; the stem is a small share of the network's multiply-adds
(measured in docs/guides/deployment.md). ``keep_in_full_precision`` marks such layers with
OpenVINO's ``precise`` runtime attribute, which ``save_model`` writes into the IR (as
``DisablePrecisionConversion``) and which the CPU plugin honours by running the layer in f32 when the
model runs at a bf16 (or f16) inference precision; ``quantize_openvino_int8`` leaves them out of int8
(NNCF's ``ignored_scope``) and marks them the same way.

int8 quantises the inputs of the compute layers (convolutions, matmuls) and nothing else: the layer
that writes the logits (``output_layers``: a class decision is a small difference between two logits),
and the per-channel scales a folded BatchNorm leaves (``Multiply``) stay float. By default NNCF also
quantises a Multiply's input, which in a dense block means the raw layer outputs before they are
concatenated, all with one scale, ahead of a per-channel scale that magnifies the rounding
(docs/guides/deployment.md has the measurements).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from densevision.inference.backends import require

# OpenVINO's DisableFP16Compression runtime attribute ("precise", version 0) under the key its Python API
# reads: ``save_model`` serialises it as the IR's DisablePrecisionConversion attribute
PRECISE_RT_INFO = "precise_0"
_COMPUTE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
# node types whose inputs int8 leaves alone: the per-channel scale of a folded BatchNorm
FLOAT_TYPES = ("Multiply",)


def input_layers(model) -> list[str]:
    """Friendly names of the first compute layers (convolution, matmul) on every path from the model's
    inputs: the stem that reads the image.

    Args:
        model: an ``openvino.Model``.
    """
    found: list[str] = []
    seen: set[str] = set()
    todo = [consumer.get_node() for parameter in model.get_parameters()
            for output in parameter.outputs() for consumer in output.get_target_inputs()]  # fmt: skip
    while todo:
        node = todo.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if node.get_type_name() in _COMPUTE_TYPES:
            found.append(name)
        elif node.get_type_name() != "Result":  # through shape-keeping ops (e.g. a Convert, a Multiply)
            todo += [c.get_node() for output in node.outputs() for c in output.get_target_inputs()]
    return sorted(found)


def output_layers(model) -> list[str]:
    """Friendly names of the last compute layers (convolution, matmul) on every path to the model's
    outputs, and of the float operations after them (a bias, a resize of the logits): the head that writes
    the logits.

    Args:
        model: an ``openvino.Model``.
    """
    found: list[str] = []
    seen: set[str] = set()
    todo = [result.input_value(0).get_node() for result in model.get_results()]
    while todo:
        node = todo.pop()
        name = node.get_friendly_name()
        if name in seen or node.get_type_name() in ("Parameter", "Constant"):
            continue
        seen.add(name)
        found.append(name)
        if node.get_type_name() not in _COMPUTE_TYPES:  # back through its float inputs, not shape inputs
            todo += [value.get_node() for value in node.input_values() if value.get_element_type().is_real()]
    return sorted(found)


def keep_in_full_precision(model, names: Iterable[str]) -> list[str]:
    """Mark the nodes ``names`` of the ``openvino.Model`` ``model`` to run in f32 when it is compiled at a
    bf16 (or f16) inference precision; the mark reaches the IR through ``openvino.save_model``. Compile the
    saved IR: the CPU plugin of OpenVINO 2026.4 does not read the mark on a model compiled from memory.

    Returns:
        The names marked, in graph order.

    Raises:
        ValueError: a name is not a node of ``model``.
    """
    wanted = set(names)
    marked = []
    for node in model.get_ordered_ops():
        if node.get_friendly_name() in wanted:
            node.get_rt_info()[PRECISE_RT_INFO] = ""
            marked.append(node.get_friendly_name())
    missing = wanted - set(marked)
    if missing:
        raise ValueError(f"no node named {', '.join(sorted(missing))} in the model to keep in full precision")
    return marked


def quantize_openvino_int8(
    model_xml: Path, calibration: Iterable[np.ndarray], output_xml: Path, *, subset_size: int,
    keep_float: Iterable[str] | None = None,
) -> list[str]:
    """Quantise the OpenVINO model ``model_xml`` (IR or ONNX) to int8 and save it as ``output_xml``.

    Args:
        model_xml: the float model (``model.xml`` of an export folder, or a ``.onnx`` file).
        calibration: (N, 3, H, W) float32 normalised batches, as the model's input in prediction (the
            shapes the model accepts); one batch per item.
        output_xml: where the int8 IR goes (``model_int8.xml`` in an export folder is what
            ``load_backend(..., precision="int8")`` reads); its ``.bin`` is written beside it.
        subset_size: how many calibration items NNCF uses (at most that many are read from
            ``calibration``).
        keep_float: names of nodes left out of int8 and run in f32 (``keep_in_full_precision``); None:
            the layers that read the image (``input_layers``). The head (``output_layers``) and the
            ``FLOAT_TYPES`` stay float in either case.

    Returns:
        The names of the nodes left in float (``keep_float`` and the head), in graph order.

    Raises:
        ValueError: ``subset_size`` is not positive or ``calibration`` is empty.
        FileNotFoundError: ``model_xml`` does not exist.
        MissingBackendError: openvino or nncf is not installed (an ``ImportError``).
    """
    if subset_size < 1:
        raise ValueError(f"subset_size must be a positive number of calibration batches, got {subset_size}")
    model_xml, output_xml = Path(model_xml), Path(output_xml)
    if not model_xml.is_file():
        raise FileNotFoundError(f"{model_xml}: no such model to quantise (export it with --format openvino)")
    ov = require("openvino")
    nncf = require("nncf")
    items = [np.ascontiguousarray(x, dtype=np.float32) for x in itertools.islice(calibration, subset_size)]
    if not items:
        raise ValueError(
            "calibration gave no images: pass at least one (N, 3, H, W) batch of training images"
        )
    model = ov.Core().read_model(str(model_xml))
    keep = sorted(input_layers(model) if keep_float is None else keep_float)
    head = [name for name in output_layers(model) if name not in keep]
    # NNCF's INFO lines (the ignored layers found, the quantizers not added) restate what densevision.json
    # records; its warnings still show.
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(max(level, logging.WARNING))
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            # symmetric int8 everywhere: the CPU plugin's fastest kernels; ReLU networks lose nothing by it
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(items),
            ignored_scope=nncf.IgnoredScope(names=keep + head, types=list(FLOAT_TYPES), validate=False),
            # NNCF halves the weight range of the first quantised layers against the int16 overflow of
            # CPUs without VNNI, meant for a layer that reads the full-range image; that layer stays float
            # here, and the halved range cost agreement without changing it under oneDNN's AVX2 kernels
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix.DISABLE),
        )
    finally:
        nncf_log.setLevel(level)
    kept = keep_in_full_precision(quantized, keep + head)  # f32, not bf16, where int8 runs with bf16
    output_xml.parent.mkdir(parents=True, exist_ok=True)
    # int8 weights are stored as int8 already; keep the float parts (biases, scales) in full precision
    ov.save_model(quantized, str(output_xml), compress_to_fp16=False)
    return kept
