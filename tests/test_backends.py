"""``densevision.inference.backends`` and ``quantize``: one tiny segmenter exported to ONNX and OpenVINO IR,
run on every backend and compared with PyTorch; int8 through NNCF; the refusals."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from densevision.inference import backends, optimize
from densevision.inference.backends import MissingBackendError, load_backend, torch_backend
from densevision.inference.model_folder import ModelFolderError, write_metadata
from densevision.inference.quantize import input_layers, output_layers, quantize_openvino_int8
from densevision.models.segmentation.tiramisu import FCDenseNet

ov = pytest.importorskip("openvino", reason="the deploy extra (openvino) is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra (onnxruntime) is not installed")

SHAPE = (2, 3, 32, 48)


def _images(seed: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SHAPE[1:]), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny FC-DenseNet (5 classes) and a folder with its model.onnx and model.xml/.bin."""
    torch.manual_seed(0)
    model = FCDenseNet(num_classes=5, growth_rate=4, down_blocks=(2, 2), bottleneck_layers=2, stem_channels=8,
                       drop_rate=0.0).eval()
    folder = tmp_path_factory.mktemp("export")
    torch.onnx.export(model, (torch.zeros(SHAPE),), folder / "model.onnx", input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    # compress_to_fp16=False: fp16 weights would move the outputs by ~1e-3, more than the fp32 check allows
    ov.save_model(ov.convert_model(folder / "model.onnx"), folder / "model.xml", compress_to_fp16=False)
    write_metadata(folder, {"format": "onnx", "task": "segmentation"})  # OpenVINO reads model.xml beside it
    return model, folder


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fp32_backends_match_pytorch(exported, backend):
    model, folder = exported
    run = load_backend(folder, backend, precision="fp32", threads=1)
    x = _images(1)
    out = run(x)
    assert out.shape == (2, 5, 32, 48) and out.dtype == np.float32
    np.testing.assert_allclose(out, _torch_logits(model, x), atol=1e-4, rtol=1e-4)


def test_openvino_result_survives_the_next_call(exported):
    _, folder = exported
    run = load_backend(folder, "openvino", precision="f32")
    first = run(_images(1))
    kept = first.copy()
    run(_images(2))  # the infer request is reused: its output buffer is overwritten
    np.testing.assert_array_equal(first, kept)


def test_openvino_bf16_keeps_the_decisions(exported):
    if not optimize.cpu_has_fast_bf16():
        pytest.skip("this CPU has no AMX / AVX512-BF16")
    model, folder = exported
    x = _images(3)
    out = load_backend(folder, "openvino", precision="bf16")(x)
    agree = (out.argmax(1) == _torch_logits(model, x).argmax(1)).mean()
    assert agree >= 0.95


def test_bf16_without_cpu_support_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(backends, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="densevision"):
        assert backends.resolve_precision("openvino", "bf16") == "fp32"
    assert "no AMX / AVX512-BF16: running openvino in float32" in caplog.text
    assert backends.resolve_precision("openvino", None) == "fp32"
    monkeypatch.setattr(backends, "cpu_has_fast_bf16", lambda: True)
    assert backends.resolve_precision("openvino", None) == "bf16"
    assert backends.resolve_precision("onnxruntime", None) == "fp32"


def test_torch_backend_runs_a_plain_module(exported):
    model, _ = exported
    x = _images(4)
    out = torch_backend(model, precision="fp32")(x)
    np.testing.assert_allclose(out, _torch_logits(model, x), atol=1e-4, rtol=1e-4)


def test_int8_keeps_the_decisions_and_loads_through_load_backend(exported):
    model, folder = exported
    calibration = (_images(seed) for seed in range(100, 108))
    out_xml = folder / "model_int8.xml"
    kept = quantize_openvino_int8(folder / "model.xml", calibration, out_xml, subset_size=8)
    assert out_xml.is_file() and out_xml.with_suffix(".bin").is_file()
    head = output_layers(ov.Core().read_model(folder / "model.xml"))
    assert head == ["logits"] and "logits" in kept  # the classifier convolution, named by its output
    quantized = ov.Core().read_model(out_xml)
    ops = {op.get_friendly_name(): op for op in quantized.get_ops()}
    activation_quantizers = [op for op in ops.values() if op.get_type_name() == "FakeQuantize"
                             and op.input_value(0).get_node().get_type_name() != "Constant"]  # fmt: skip
    # int8 only where a compute layer reads it: never ahead of a concatenation or a BatchNorm's scale
    assert {consumer.get_node().get_type_name() for op in activation_quantizers
            for consumer in op.output(0).get_target_inputs()} == {"Convolution", "ConvolutionBackpropData"}
    # the head and the stem read float
    for name in [*head, *input_layers(quantized)]:
        assert all(v.get_node().get_type_name() != "FakeQuantize" for v in ops[name].input_values()), name
    x = _images(5)
    out = load_backend(folder, "openvino", precision="int8")(x)
    agree = (out.argmax(1) == _torch_logits(model, x).argmax(1)).mean()
    assert agree >= 0.9


def test_int8_refuses_empty_calibration(exported, tmp_path):
    _, folder = exported
    with pytest.raises(ValueError, match="calibration gave no images"):
        quantize_openvino_int8(folder / "model.xml", [], tmp_path / "q.xml", subset_size=4)
    with pytest.raises(ValueError, match="subset_size must be a positive number .* got 0"):
        quantize_openvino_int8(folder / "model.xml", [_images(0)], tmp_path / "q.xml", subset_size=0)


def test_refusals_name_the_problem_and_the_fix(exported, tmp_path):
    _, folder = exported
    with pytest.raises(ValueError, match="must be one of torch, onnxruntime, openvino, got 'tensorrt'"):
        load_backend(folder, "tensorrt")
    with pytest.raises(ValueError, match="onnxruntime backend runs precision fp32, got 'bf16'; use --back"):
        load_backend(folder, "onnxruntime", precision="bf16")
    with pytest.raises(ModelFolderError, match="nope is not a folder: --model takes a folder written by"):
        load_backend(tmp_path / "nope", "openvino")
    (tmp_path / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    write_metadata(tmp_path, {"format": "onnx", "task": "segmentation"})
    with pytest.raises(FileNotFoundError, match=r"no model_int8.xml for the openvino backend "
                       r".*holds model.onnx\): export it with --int8"):
        load_backend(tmp_path, "openvino", precision="int8")
    with pytest.raises(ModelFolderError, match="holds a onnx model, which --backend torch does not run"):
        load_backend(tmp_path, "torch", precision="fp32")


@pytest.mark.parametrize("package, backend", [("openvino", "openvino"), ("onnxruntime", "onnxruntime")])
def test_missing_runtime_names_the_extra(exported, monkeypatch, package, backend):
    _, folder = exported
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    with pytest.raises(MissingBackendError, match=rf"the {backend} backend needs the {package} package.*"
                       r"pip install densevision\[deploy\]$"):
        load_backend(folder, backend, precision="fp32")
    assert issubclass(MissingBackendError, ImportError)


def test_a_onednn_isa_cap_below_bf16_turns_bf16_off(monkeypatch) -> None:
    # ONEDNN_MAX_CPU_ISA=AVX2 leaves PyTorch's and OpenVINO's oneDNN without bf16 kernels on any CPU.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    optimize.cpu_has_fast_bf16.cache_clear()
    try:
        assert optimize.cpu_has_fast_bf16() is False
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        optimize.cpu_has_fast_bf16.cache_clear()
