"""One prediction path from a run to every backend: a tiny run trained through the CLI with a non-default
normalisation saves it with its hyper-parameters; ``predict --checkpoint`` equals Lightning's
``predict_step``; ``export --checkpoint`` writes self-describing folders (onnx, openvino, safetensors)
whose ``predict --model --backend ...`` masks equal the checkpoint's; corrupt or mismatched folders,
mixed prediction folders and missing runtimes are refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import densevision
from densevision.cli import main
from densevision.datasets.shapes_segmentation import SHAPES_COLORS
from densevision.datasets.transforms import MEAN, STD, EvaluationTransform
from densevision.inference.backends import load_backend
from densevision.inference.export import ExportError, export_folder, run_metadata
from densevision.inference.model_folder import ModelFolderError, check_backend, read_metadata, sha256
from densevision.inference.predict import predict
from densevision.models.backbones.densenet import DenseNet
from densevision.models.segmentation.tiramisu import FCDenseNet
from densevision.tasks.checkpoints import load_task, read_checkpoint
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint
from tests.test_cli import QUIET, TINY_MODEL, TINY_SHAPES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
RUN_MEAN, RUN_STD = (0.2, 0.3, 0.6), (0.5, 0.4, 0.3)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FC-DenseNet trained for a few steps on 48x48 shapes, normalised with RUN_MEAN / RUN_STD."""
    root = tmp_path_factory.mktemp("deploy")
    argv = ["fit", "--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(root / "shapes")]
    argv += [
        *TINY_SHAPES,
        *TINY_MODEL,
        *QUIET,
        "--trainer.max_steps",
        "4",
        "--trainer.limit_val_batches",
        "1",
    ]
    argv += ["--data.init_args.mean", str(list(RUN_MEAN)), "--data.init_args.std", str(list(RUN_STD))]
    argv += ["--trainer.default_root_dir", str(root / "run")]
    assert main(argv) == 0
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def val_images(run: Path) -> Path:
    return run.parents[2] / "shapes" / "val"


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {f.name: np.array(Image.open(f)) for f in sorted((folder / "masks").glob("*.png"))}


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys() and a
    return sum(int((a[k] == b[k]).sum()) for k in a) / sum(v.size for v in a.values())


@pytest.fixture(scope="module")
def checkpoint_masks(run: Path, val_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "ckpt"
    argv = ["predict", "--checkpoint", str(run), "--input", str(val_images), "--output", str(out)]
    assert main([*argv, "--no-optimize", "--no-progress"]) == 0
    return out


def test_run_saves_its_normalisation_and_predict_checkpoint_equals_predict_step(
    run, val_images, checkpoint_masks
):
    hparams = read_checkpoint(run).hyper_parameters
    assert tuple(hparams["mean"]) == RUN_MEAN and tuple(hparams["std"]) == RUN_STD
    assert [tuple(c) for c in hparams["palette"]] == [tuple(c) for c in SHAPES_COLORS]
    task = load_task(run)
    assert task.preprocessing.mean == RUN_MEAN and task.preprocessing.std == RUN_STD
    recorded = json.loads((checkpoint_masks / "predicted_by.json").read_text())["preprocessing"]
    assert recorded["mean"] == list(RUN_MEAN) and recorded["std"] == list(RUN_STD)
    masks = _masks(checkpoint_masks)
    transform = EvaluationTransform(None, RUN_MEAN, RUN_STD)  # what the data module feeds predict_step
    for name, mask in masks.items():
        image = np.array(Image.open(val_images / name).convert("RGB"))
        with torch.no_grad():
            out = task.predict_step({"image": transform(image=image)["image"][None]}, 0)
        np.testing.assert_array_equal(mask, out["prediction"][0].numpy())
    # the defaults would have fed the network other numbers: the saved normalisation is what is used
    x_run = transform(image=image)["image"]
    assert not torch.allclose(x_run, EvaluationTransform(None)(image=image)["image"])


@pytest.mark.parametrize(
    ("fmt", "backend"),
    [("onnx", "onnxruntime"), ("openvino", "openvino"), ("safetensors", "torch"), ("onnx", "openvino")],
)
def test_each_export_format_predicts_the_checkpoints_masks_on_its_backend(
    run, val_images, checkpoint_masks, tmp_path, fmt, backend
):
    pytest.importorskip(
        {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "safetensors"}[backend]
    )
    folder = tmp_path / fmt
    argv = ["export", "--checkpoint", str(run), "--format", fmt, "--output", str(folder)]
    assert main([*argv, "--input-size", "48", "48"]) == 0
    metadata = read_metadata(folder)
    assert metadata["format"] == fmt and metadata["task"] == "segmentation"
    pre = metadata["preprocessing"]
    assert pre["mean"] == list(RUN_MEAN) and pre["std"] == list(RUN_STD) and pre["input_size"] == [48, 48]
    assert metadata["class_names"] == load_task(run).class_names
    assert metadata["palette"] == [list(c) for c in SHAPES_COLORS]
    assert metadata["checkpoint"]["sha256"] == sha256(run)
    assert metadata["model"]["class_path"].endswith("FCDenseNet")
    assert metadata["densevision_version"] == densevision.__version__
    assert all(v["ok"] and v["max_abs_ref"] > 0 for v in metadata["verification"])
    out = tmp_path / "pred"
    argv = ["predict", "--model", str(folder), "--backend", backend, "--input", str(val_images)]
    assert main([*argv, "--output", str(out), "--no-bf16", "--no-progress"]) == 0
    assert _agreement(_masks(out), _masks(checkpoint_masks)) >= 0.999
    assert json.loads((out / "predicted_by.json").read_text())["backend"] == backend


def test_load_model_rebuilds_a_safetensors_folder_without_lightning(run, tmp_path):
    folder = tmp_path / "st"
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--output", str(folder),
                 "--input-size", "48", "48"]) == 0  # fmt: skip
    model = densevision.load_model(folder)
    task = load_task(run)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), task.model(x), rtol=0, atol=0)
    assert not any("lightning" in type(m).__module__ for m in model.modules())
    with pytest.raises(ModelFolderError, match="rebuilds PyTorch modules from --format safetensors"):
        shutil.copytree(folder, tmp_path / "as_onnx")
        meta = json.loads((tmp_path / "as_onnx" / "densevision.json").read_text())
        (tmp_path / "as_onnx" / "model.onnx").write_bytes(b"")
        meta["format"], meta["files"] = "onnx", {"model.onnx": sha256(tmp_path / "as_onnx" / "model.onnx")}
        (tmp_path / "as_onnx" / "densevision.json").write_text(json.dumps(meta))
        densevision.load_model(tmp_path / "as_onnx")


def test_corrupt_or_mismatched_folders_are_refused(run, val_images, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    good = tmp_path / "good"
    assert main(["export", "--checkpoint", str(run), "--output", str(good), "--input-size", "48", "48"]) == 0
    other = tmp_path / "other"  # another export of the same run, at another size
    assert main(["export", "--checkpoint", str(run), "--output", str(other), "--input-size", "32", "32",
                 "--dynamic"]) == 0  # fmt: skip
    cases = {
        "truncated": (lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:100]),
                      r"model.onnx does not match densevision.json \(sha256 differs"),
        "swapped": (lambda f: shutil.copy(other / "model.onnx", f / "model.onnx"), "sha256 differs"),
        "no metadata": (lambda f: (f / "densevision.json").unlink(), "has no densevision.json"),
        "bad json": (lambda f: (f / "densevision.json").write_text("{"), "is not valid JSON"),
        "no model": (lambda f: (f / "model.onnx").unlink(), "onnx model file model.onnx is missing"),
    }  # fmt: skip
    for name, (damage, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(good, folder)
        damage(folder)
        with pytest.raises(ModelFolderError, match=message):
            load_backend(folder, "onnxruntime")
        capsys.readouterr()
        argv = [
            "predict",
            "--model",
            str(folder),
            "--input",
            str(val_images),
            "--output",
            str(tmp_path / "o"),
        ]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the message + the --debug hint
        assert not (tmp_path / "o" / "masks").exists()
    with pytest.raises(
        ModelFolderError, match="--backend torch does not run; use --backend onnxruntime or openvino"
    ):
        check_backend(good, read_metadata(good), "torch")


def test_a_missing_runtime_names_the_extra(run, tmp_path, monkeypatch, capsys, val_images):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "onnx"
    assert (
        main(["export", "--checkpoint", str(run), "--output", str(folder), "--input-size", "48", "48"]) == 0
    )
    capsys.readouterr()
    argv = ["predict", "--model", str(folder), "--input", str(val_images), "--output", str(tmp_path / "w")]
    assert main([*argv, "--window-size", "32", "32"]) == 1  # the file takes 48x48 only
    assert "takes 48x48 inputs, and this prediction would feed it 32x32" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install densevision\[deploy\]"):
        load_backend(folder, "onnxruntime")
    capsys.readouterr()
    argv = ["predict", "--model", str(folder), "--input", str(val_images), "--output", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pip install densevision[deploy]" in err and "Traceback" not in err


def test_predict_never_mixes_two_models_outputs(run, val_images, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "predict",
        "--checkpoint",
        str(run),
        "--input",
        str(val_images),
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    (out / "evaluation.json").write_text("{}")  # an evaluation of these masks
    before = {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    capsys.readouterr()
    assert main(argv) == 1
    assert "already holds predictions (masks, overlays, evaluation.json" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()} == before  # nothing touched
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "evaluation.json").exists() and len(list((out / "masks").iterdir())) == len(before)


def test_old_checkpoint_without_normalisation_loads_and_exports_with_the_defaults(tmp_path):
    tiny = {"num_classes": 3, "growth_rate": 4, "down_blocks": [1, 1], "bottleneck_layers": 1,
            "stem_channels": 8}  # fmt: skip
    hparams = cli_hparams("densevision.models.segmentation.tiramisu.FCDenseNet", tiny, num_classes=3,
                          input_size=(16, 16))  # fmt: skip
    assert "mean" not in hparams and "palette" not in hparams
    ckpt = write_fit_checkpoint(tmp_path / "old" / "checkpoints" / "last.ckpt", FCDenseNet(**tiny), hparams,
                                num_classes=3)  # fmt: skip
    task = load_task(ckpt)
    assert task.mean == MEAN and task.std == STD and task.palette is None
    metadata = run_metadata(task, read_checkpoint(ckpt).hyper_parameters, ckpt)
    assert metadata["preprocessing"]["mean"] == list(MEAN) and metadata["preprocessing"]["input_size"] == [
        16,
        16,
    ]
    assert len(metadata["palette"]) == 3  # generated colours, written down so every backend draws the same


def test_export_of_a_classifier_and_refusals(tmp_path):
    tiny = {"growth_rate": 4, "block_config": [1, 1], "stem": "cifar", "stem_channels": 8, "num_classes": 3}
    hparams = cli_hparams("densevision.models.backbones.densenet.DenseNet", tiny, num_classes=3)
    ckpt = write_fit_checkpoint(tmp_path / "cls" / "checkpoints" / "last.ckpt", DenseNet(**tiny), hparams,
                                num_classes=3)  # fmt: skip
    out = tmp_path / "cls_st"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output", str(out),
                 "--input-size", "16", "16"]) == 0  # fmt: skip
    assert read_metadata(out)["task"] == "classification" and read_metadata(out)["outputs"] == ["logits"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(densevision.load_model(out)(x), load_task(ckpt).model(x))
    with pytest.raises(ExportError, match="is not empty; choose a new folder or add --overwrite"):
        export_folder(DenseNet(**tiny), out, fmt="onnx", metadata={}, input_size=(16, 16))
    with pytest.raises(ValueError, match="--int8 quantises OpenVINO models: add --format openvino"):
        main(["--debug", "export", "--checkpoint", str(ckpt), "--int8", "--output", str(tmp_path / "x")])
    assert not list(tmp_path.glob("*partial*")) and not (tmp_path / "x").exists()


def test_a_dynamic_export_that_fails_at_other_sizes_is_refused_and_leaves_nothing(tmp_path):
    pytest.importorskip("onnxruntime")
    model = FCDenseNet(
        num_classes=3, growth_rate=4, down_blocks=(1, 1, 1), bottleneck_layers=1, stem_channels=8
    )
    out = tmp_path / "dyn"
    metadata = {"task": "segmentation", "model": {"class_path": "densevision.x.FCDenseNet"}}
    with pytest.raises(
        ExportError, match=r"--dynamic: FCDenseNet exported with a free image size fails at .*it works"
    ):
        export_folder(model.eval(), out, fmt="onnx", metadata=metadata, input_size=(45, 45), dynamic=True,
                      log=lambda _: None)  # fmt: skip
    assert not out.exists() and not list(tmp_path.iterdir())


def test_detectors_are_refused_by_the_openvino_export_with_the_format_that_works(tmp_path):
    builders = pytest.importorskip("densevision.models.detection.densenet_fpn")
    body = DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), stem_channels=8, features_only=True,
                    out_features=["c2", "c3", "c4", "c5"])  # fmt: skip
    model = builders.densenet_fpn_detector(kind="fasterrcnn", backbone=body, num_classes=3, min_size=64,
                                           max_size=64, fpn_channels=16)  # fmt: skip
    with pytest.raises(ExportError, match="does not convert; use --format onnx .* or --format safetensors"):
        export_folder(model.eval(), tmp_path / "det", fmt="openvino", metadata={}, input_size=(64, 64))
    assert not list(tmp_path.iterdir())


def test_int8_export_keeps_agreement(run, val_images, tmp_path):
    pytest.importorskip("densevision.inference.quantize")
    pytest.importorskip("nncf")
    out = tmp_path / "int8"
    argv = ["export", "--checkpoint", str(run), "--format", "openvino", "--int8", "--calibration-images"]
    assert main([*argv, str(val_images), "--output", str(out), "--input-size", "48", "48"]) == 0
    metadata = read_metadata(out)
    assert metadata["int8"]["file"] == "model_int8.xml" and metadata["int8"]["class_agreement"] >= 0.99
    out_f32, out_int8 = tmp_path / "f32", tmp_path / "int8-masks"
    argv = ["predict", "--model", str(out), "--backend", "openvino", "--input", str(val_images)]
    argv += ["--no-progress"]
    assert main([*argv, "--output", str(out_f32), "--no-bf16"]) == 0
    assert main([*argv, "--output", str(out_int8), "--int8"]) == 0
    assert _agreement(_masks(out_f32), _masks(out_int8)) >= 0.99


def test_library_predict_takes_a_backend_function(tmp_path, val_images):
    """``predict`` with a plain function: the same files as with the module it wraps."""
    model = FCDenseNet(num_classes=3, growth_rate=4, down_blocks=(1, 1), bottleneck_layers=1, stem_channels=8)
    model.eval()
    files = sorted(val_images.glob("*.png"))[:2]
    predict(model, files, tmp_path / "module", optimize=False, progress=False, input_size=(32, 32))

    def function(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    predict(function, files, tmp_path / "function", progress=False, input_size=(32, 32))
    assert _agreement(_masks(tmp_path / "module"), _masks(tmp_path / "function")) == 1.0
