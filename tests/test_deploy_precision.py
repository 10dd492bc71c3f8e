"""Lower precision that keeps the decisions: an OpenVINO export keeps the layers reading the image in f32
(recorded in ``densevision.json``), the CPU plugin runs them in f32 within bf16 inference, and the bf16 and
int8 masks of a tiny trained run agree with float32's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densevision.cli import main
from densevision.inference.model_folder import read_metadata
from densevision.inference.optimize import cpu_has_fast_bf16
from tests.test_cli import QUIET, TINY_MODEL, TINY_SHAPES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
STEM = "/model/encoder/conv0/Conv"  # FC-DenseNet's first convolution, as torch.onnx.export names it
CLASSIFIER = "/model/classifier/Conv"  # its last (the bias Add; the convolution is .../WithoutBiases)

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FC-DenseNet trained for a few steps on 48x48 shapes."""
    root = tmp_path_factory.mktemp("precision")
    argv = ["fit", "--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(root / "shapes")]
    argv += [*TINY_SHAPES, *TINY_MODEL, *QUIET, "--trainer.max_steps", "4"]
    argv += ["--trainer.limit_val_batches", "1"]
    argv += ["--trainer.default_root_dir", str(root / "run")]
    assert main(argv) == 0
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def export(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("export") / "ov"
    train = run.parents[2] / "shapes" / "train"
    argv = ["export", "--checkpoint", str(run), "--format", "openvino", "--int8", "--calibration-images"]
    assert main([*argv, str(train), "--output", str(out), "--input-size", "48", "48"]) == 0
    return out


def _runtime_precisions(xml: Path, hint: str) -> dict[str, str]:
    """Original layer name -> the precision OpenVINO's CPU plugin runs it at, compiled with ``hint``."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    found = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "Deconvolution"):
            for name in info["originalLayersNames"].astype(str).split(","):
                found[name] = info["runtimePrecision"].astype(str)
    return found


def test_the_stem_is_kept_in_f32_and_recorded(export):
    metadata = read_metadata(export)
    assert metadata["bf16"]["kept_in_f32"] == [STEM]
    # int8 also leaves the head in float: the classifier and the resize of its logits
    assert metadata["int8"]["kept_in_float"] == [STEM, f"{CLASSIFIER}/WithoutBiases", CLASSIFIER, "logits"]
    precisions = _runtime_precisions(export / "model.xml", "bf16")
    assert precisions[STEM] == "f32"
    if cpu_has_fast_bf16():  # elsewhere OpenVINO runs every layer in f32 anyway
        assert {p for name, p in precisions.items() if name != STEM} == {"bf16"}
    precisions = _runtime_precisions(export / "model_int8.xml", "bf16")
    assert precisions[STEM] == "f32" and {"u8", "i8"} & set(precisions.values())
    assert precisions[f"{CLASSIFIER}/WithoutBiases"] == "f32"


def test_int8_is_scored_on_the_runs_validation_split(run, export):
    validation = read_metadata(export)["int8"]["validation"]
    val = run.parents[2] / "shapes" / "val"
    assert validation["split"] == str(val) and validation["images"] == min(100, len(list(val.glob("*.png"))))
    assert 0 < validation["miou_float32"] <= 1 and 0 < validation["miou_int8"] <= 1
    assert abs(validation["miou_int8"] - validation["miou_float32"]) <= 0.01
    assert validation["pixel_agreement"] >= 0.995


def test_int8_export_without_the_runs_config_says_why_it_is_not_scored(run, tmp_path, capsys):
    import shutil

    lone = tmp_path / "lone" / "checkpoints" / "last.ckpt"  # a checkpoint copied without its run folder
    lone.parent.mkdir(parents=True)
    shutil.copy(run, lone)
    train = run.parents[2] / "shapes" / "train"
    argv = ["export", "--checkpoint", str(lone), "--format", "openvino", "--int8", "--calibration-images"]
    assert main([*argv, str(train), "--output", str(tmp_path / "ov"), "--input-size", "48", "48"]) == 0
    out = capsys.readouterr().out
    assert "int8 validation score not measured: cannot build the run's validation split" in out
    assert "config.yaml" in out and "densevision evaluate" in out
    assert "validation" not in read_metadata(tmp_path / "ov")["int8"]


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {f.name: np.array(Image.open(f)) for f in sorted((folder / "masks").glob("*.png"))}


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys() and a
    return sum(int((a[k] == b[k]).sum()) for k in a) / sum(v.size for v in a.values())


def test_bf16_and_int8_masks_agree_with_float32(run, export, tmp_path):
    images = run.parents[2] / "shapes" / "val"
    argv = ["predict", "--model", str(export), "--backend", "openvino", "--input", str(images)]
    argv += ["--no-progress"]
    masks = {}
    for flag in ("--no-bf16", "--bf16", "--int8"):
        assert main([*argv, "--output", str(tmp_path / flag), flag]) == 0
        masks[flag] = _masks(tmp_path / flag)
    assert _agreement(masks["--no-bf16"], masks["--bf16"]) >= 0.995
    assert _agreement(masks["--no-bf16"], masks["--int8"]) >= 0.995


def test_a_refused_dynamic_export_names_the_size_that_makes_it_work(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from densevision.inference.export import ExportError, export_folder
    from densevision.models.segmentation.tiramisu import FCDenseNet

    model = FCDenseNet(num_classes=3, growth_rate=4, down_blocks=(1, 1, 1), bottleneck_layers=1,
                       stem_channels=8)  # fmt: skip
    stride = max(spec.stride for spec in model.encoder.feature_info)
    size = stride * 5 + stride // 2 + 1  # odd sizes on the down path: the up path crops its skips
    metadata = {"task": "segmentation", "model": {"class_path": "densevision.x.FCDenseNet"}}
    fix = rf"divisible by {stride}.*add --input-size {stride * 6} {stride * 6} to --dynamic"
    with pytest.raises(ExportError, match=fix):
        export_folder(model.eval(), tmp_path / "a", fmt="onnx", metadata=metadata, input_size=(size, size),
                      dynamic=True, log=lambda _: None)  # fmt: skip
    assert not list(tmp_path.iterdir())
    export_folder(model, tmp_path / "b", fmt="onnx", metadata=metadata, input_size=(stride * 6,) * 2,
                  dynamic=True, log=lambda _: None)  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, size, size + 3)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4, rtol=1e-3)


def test_int8_quantisation_prints_no_nncf_info_lines(export, tmp_path, caplog):
    import logging

    import numpy as np

    from densevision.inference.quantize import quantize_openvino_int8

    level = logging.getLogger("nncf").level
    caplog.set_level(logging.INFO)
    calibration = [np.random.default_rng(0).standard_normal((1, 3, 48, 48), dtype=np.float32)]
    quantize_openvino_int8(export / "model.xml", calibration, tmp_path / "q.xml", subset_size=1)
    assert (tmp_path / "q.xml").is_file()
    chatter = [r.getMessage() for r in caplog.records
               if r.name.startswith("nncf") and r.levelno < logging.WARNING]
    assert chatter == []
    assert logging.getLogger("nncf").level == level  # NNCF's own setting is given back
