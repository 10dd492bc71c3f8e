"""Post-training int8 quantisation of an OpenVINO model with NNCF, for CPUs without bf16.

On CPUs that multiply int8 natively (AVX512-VNNI, AVX-VNNI, AMX-INT8) but not bf16 (e.g. AMD AVX2 or
older Xeons), an int8 IR is the fastest way to run a network on OpenVINO; on AMX CPUs it is about as fast
as bf16. NNCF's post-training quantisation (``nncf.quantize``) measures the activation ranges on a few
calibration batches of the run's own training images (preprocessed exactly as for prediction) and inserts
FakeQuantize nodes that OpenVINO's CPU plugin executes as int8 kernels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from densevision.inference.backends import require


def quantize_openvino_int8(
    model_xml: Path, calibration: Iterable[np.ndarray], output_xml: Path, *, subset_size: int
) -> Path:
    """Quantise the OpenVINO model ``model_xml`` (IR or ONNX) to int8 and save it as ``output_xml``.

    Args:
        model_xml: the float model (``model.xml`` of an export folder, or a ``.onnx`` file).
        calibration: (N, 3, H, W) float32 normalised batches, as the model's input in prediction (the
            shapes the model accepts); one batch per item.
        output_xml: where the int8 IR goes (``model_int8.xml`` in an export folder is what
            ``load_backend(..., precision="int8")`` reads); its ``.bin`` is written beside it.
        subset_size: how many calibration items NNCF uses (at most that many are read from
            ``calibration``).

    Returns:
        ``output_xml``.

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
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        # symmetric int8 everywhere: the CPU plugin's fastest kernels; ReLU networks lose nothing by it
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(items),
    )
    output_xml.parent.mkdir(parents=True, exist_ok=True)
    # int8 weights are stored as int8 already; keep the float parts (biases, scales) in full precision
    ov.save_model(quantized, str(output_xml), compress_to_fp16=False)
    return output_xml
