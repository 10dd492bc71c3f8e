"""Every config in ``configs/`` walks the user's path: ``fit`` for a batch on tiny generated data, then the
run's checkpoint loads in ``densevision predict`` (image files, no config), ``export``, ``validate`` and
``test``, with no hand edits. Models keep their architecture (only image sizes, batch sizes, data loader
workers and batch counts shrink), so what a real run writes is what is loaded here.

Configs are found by globbing ``configs/<task>/*.yaml``; the tiny data of each comes from ``TINY_DATA``,
keyed by the config's data module class: a new config on a known data module is walked without a change
here, and a config on a new data module fails ``test_every_config_has_tiny_data`` until its entry is added.
"""

from __future__ import annotations

import importlib
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from densevision.cli import main
from densevision.datasets.shapes_detection import ensure_shapes_detection_dataset
from densevision.tasks.checkpoints import load_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEGMENTATION = sorted(p.name for p in (CONFIGS / "segmentation").glob("*.yaml"))
DETECTION = sorted(p.name for p in (CONFIGS / "detection").glob("*.yaml"))
ONE_BATCH = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "1",
]
ONE_BATCH += ["--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0"]
ONE_BATCH += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
ONE_BATCH += ["--trainer.max_time", "null", "--trainer.logger", "true"]
# export traces and verifies the model on a sample this size (its default, 224 x 224, costs 12 times more)
EXPORT_SIZE = ["--input-size", "64", "64"]


@dataclass(frozen=True)
class TinyData:
    """A config's data on a few tiny generated images.

    Attributes:
        args: command-line overrides pointing the config's data module at it.
        images: a folder of image files for ``densevision predict``.
    """

    args: list[str]
    images: Path


def _camvid(root: Path) -> None:
    """CamVid's layout, label space and frame names (two sequences) in a few 72x96 images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for name in ("0006R0_f0", "0016E5_f0", "0016E5_f1"):
            Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(
                root / split / f"{name}.png"
            )
            mask = rng.integers(0, 12, (72, 96), dtype=np.uint8)
            Image.fromarray(mask).save(root / f"{split}annot" / f"{name}.png")


def camvid_data(data_dir: Path, tmp_path: Path) -> TinyData:
    root = data_dir / "camvid"
    if not root.is_dir():
        _camvid(root)
    args = ["--data.init_args.root", str(root), "--data.init_args.resize", "[64, 80]"]
    return TinyData(args + ["--data.init_args.crop_size", "[64, 64]"], root / "test")


def own_folders_data(data_dir: Path, tmp_path: Path) -> TinyData:
    """The own-data template (``custom.yaml``) on CamVid's layout: the user states the label space."""
    data = camvid_data(data_dir, tmp_path)
    return TinyData(data.args + ["--data.init_args.num_classes", "11", "--data.init_args.ignore_index", "11"],
                    data.images)  # fmt: skip


def shapes_segmentation_data(data_dir: Path, tmp_path: Path) -> TinyData:
    """The generated shapes set of the demo: smaller and fewer images."""
    args = ["--data.init_args.root", str(tmp_path / "shapes"), "--data.init_args.image_size", "64"]
    return TinyData(args, data_dir / "camvid_for_predict" / "test")


def coco_data(data_dir: Path, tmp_path: Path) -> TinyData:
    coco = _shapes_coco(data_dir)
    # An untrained detector keeps its highest-scoring boxes up to the cap (a Mask R-CNN runs its mask head
    # on each): 5 exercise every output as 100 do.
    size = ["--model.init_args.model.init_args.min_size", "64",
            "--model.init_args.model.init_args.max_size", "64",
            "--model.init_args.model.init_args.detections_per_img", "5"]  # fmt: skip
    return TinyData(size + [
        "--data.init_args.train_images", str(coco / "images"),
        "--data.init_args.train_annotations", str(coco / "annotations" / "train.json"),
        "--data.init_args.val_images", str(coco / "images"),
        "--data.init_args.val_annotations", str(coco / "annotations" / "val.json"),
    ], _one_image(coco))  # fmt: skip


def shapes_detection_data(data_dir: Path, tmp_path: Path) -> TinyData:
    coco = _shapes_coco(data_dir)
    return TinyData(["--data.init_args.root", str(coco.parent / "demo_shapes"), "--data.init_args.num_train",
                     "4", "--data.init_args.num_val", "2", "--data.init_args.dataset_image_size", "64"],
                    _one_image(coco))  # fmt: skip


def _one_image(coco: Path) -> Path:
    """A folder of one of the set's images for ``densevision predict``: an untrained detector keeps its
    100 highest-scoring boxes per image and a Mask R-CNN runs its mask head on each, so every further image
    costs seconds and tests nothing new."""
    folder = coco.parent / "predict"
    if not folder.is_dir():
        folder.mkdir()
        first = sorted(p for p in (coco / "images").rglob("*") if p.is_file())[0]
        (folder / first.name).write_bytes(first.read_bytes())
    return folder


def _shapes_coco(data_dir: Path) -> Path:
    root = data_dir / "det" / "coco"
    if not root.is_dir():
        ensure_shapes_detection_dataset(root, num_train=4, num_val=2, image_size=64)
    return root


def replica(builder: str, relative: str, images: str) -> Callable[[Path, Path], TinyData]:
    """A benchmark dataset's miniature replica, built by ``tests.datasets.replicas.<builder>`` under
    ``relative``, cropped to 64 x 64 for training; ``images`` is its folder of frames for predict."""

    def build(data_dir: Path, tmp_path: Path) -> TinyData:
        root = data_dir / relative
        if not root.is_dir():
            getattr(importlib.import_module("tests.datasets.replicas"), builder)(root)
        return TinyData(["--data.init_args.root", str(root), "--data.init_args.crop_size", "[64, 64]"],
                        root / images)  # fmt: skip

    return build


# data module class name -> its tiny data
TINY_DATA: dict[str, Callable[[Path, Path], TinyData]] = {
    "CamVidDataModule": camvid_data,
    "SegmentationDataModule": own_folders_data,
    "ShapesDataModule": shapes_segmentation_data,
    "CocoDetectionDataModule": coco_data,
    "ShapesDetectionDataModule": shapes_detection_data,
    "CityscapesDataModule": replica("cityscapes_replica", "cityscapes", "leftImg8bit/val/frankfurt"),
    "VOCSegmentationDataModule": replica("voc_replica", "VOCdevkit/VOC2012", "JPEGImages"),
    "ADE20KDataModule": replica("ade20k_replica", "ADEChallengeData2016", "images/validation"),
}


def data_class_path(config: Path) -> str:
    return yaml.safe_load(config.read_text())["data"]["class_path"]


def lighter_data_args(config: Path) -> list[str]:
    """Batches of 2 and no loader worker processes where the config's data module takes those options:
    a worker pool per stage costs more than the one batch each stage reads."""
    module, _, name = data_class_path(config).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    options = set(inspect.signature(cls).parameters)
    # options typed as ``**options: Unpack[SomeTypedDict]`` (the benchmark data modules) are its keys
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    for parameter in inspect.signature(cls).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and parameter.name in hints:
            (typed,) = typing.get_args(hints[parameter.name]) or (None,)
            options |= set(getattr(typed, "__required_keys__", ()))
            options |= set(getattr(typed, "__optional_keys__", ()))
    args = ["--data.init_args.num_workers", "0"] if "num_workers" in options else []
    return args + (["--data.init_args.batch_size", "2"] if "batch_size" in options else [])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of tiny datasets per test process, each built on first use."""
    folder = tmp_path_factory.mktemp("data")
    _camvid(folder / "camvid_for_predict")
    return folder


def smaller_windows(config: Path) -> list[str]:
    """64 x 64 sliding windows where the config predicts through windows: at the config's own (360 x 480
    or 1024 x 1024) DenseNet-161 traces and verifies its export on a window 40 to 250 times the tiny
    images, most of the walk's time."""
    windowed = yaml.safe_load(config.read_text())["model"]["init_args"].get("sliding_window")
    return ["--model.init_args.sliding_window.window_size", "[64, 64]"] if windowed else []


def tiny_data(config: Path, data_dir: Path, tmp_path: Path) -> TinyData:
    build = TINY_DATA[data_class_path(config).rpartition(".")[2]]
    data = build(data_dir, tmp_path)
    return TinyData(data.args + lighter_data_args(config) + smaller_windows(config), data.images)


def walk(config_path: Path, data_args: list[str], run: Path, images: Path, tmp_path: Path) -> None:
    """fit -> predict (files) -> export -> validate -> test on one config."""
    common = ["--config", str(config_path), *data_args, "--trainer.default_root_dir", str(run)]
    assert main(["fit", *common, *ONE_BATCH]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in run.rglob("*.ckpt"))
    task = load_task(ckpt)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    for key, value in task.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)

    out = tmp_path / "predict"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(out)]) == 0
    assert sorted((out / "overlays").iterdir())
    export = ["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(tmp_path / "x")]
    # a run that resizes its inputs exports at that size, or its window's (another --input-size is refused);
    # a windowed run without a resize as a dynamic file verified at 64 x 64; others at 64 x 64
    if getattr(task, "input_size", None):
        size = []
    else:
        size = EXPORT_SIZE + (["--dynamic"] if getattr(task, "sliding_window", None) else [])
    assert main([*export, *size]) == 0
    assert list((tmp_path / "x").glob("*.pt"))
    for stage in ("validate", "test"):
        assert main([stage, *common, *ONE_BATCH, "--ckpt_path", str(ckpt)]) == 0


def test_every_config_has_tiny_data():
    missing = {
        f"{task}/{name}": data_class_path(CONFIGS / task / name)
        for task, names in (("segmentation", SEGMENTATION), ("detection", DETECTION))
        for name in names
        if data_class_path(CONFIGS / task / name).rpartition(".")[2] not in TINY_DATA
    }
    assert not missing, f"add a tiny-data builder to TINY_DATA in {Path(__file__).name} for {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("config", SEGMENTATION)
def test_segmentation_config_fit_predict_export_validate_test(config, data_dir, tmp_path):
    run, path = tmp_path / "run", CONFIGS / "segmentation" / config
    data = tiny_data(path, data_dir, tmp_path)
    walk(path, data.args, run, data.images, tmp_path)
    task = load_task(run / "checkpoints" / "last.ckpt")
    if data_class_path(path).endswith("CamVidDataModule"):
        assert task.input_size == (64, 80)  # predictions see the training resolution
        masks = sorted((tmp_path / "predict" / "masks").iterdir())
        assert [Image.open(m).size for m in masks] == [(96, 72)] * 3  # at each image's own size
    assert list(run.glob("test-*/test_metrics.json"))  # each command writes its own folder
    benchmark = REPLICA_CLASSES.get(data_class_path(path).rpartition(".")[2])
    if benchmark is not None:
        replica_run_scores_as_its_benchmark(task, benchmark, data, run, tmp_path)


# the benchmark data modules -> their number of classes (tests/datasets/test_benchmark_configs.py checks
# the rest of their label space on each config without training)
REPLICA_CLASSES = {"CityscapesDataModule": 19, "VOCSegmentationDataModule": 21, "ADE20KDataModule": 150}


def replica_run_scores_as_its_benchmark(task, num_classes: int, data: TinyData, run: Path, tmp_path: Path):
    """A run on a benchmark's replica predicts its frames at their own size, VOC's masks are scored as they
    are on disk (the label PNGs hold the training ids) and ``test`` scores the replica's labels with the
    benchmark's mapping applied."""
    assert task.num_classes == num_classes
    sources = sorted(data.images.iterdir())
    masks = sorted((tmp_path / "predict" / "masks").iterdir())
    assert [Image.open(m).size for m in masks] == [Image.open(s).size for s in sources]
    if data.images.name == "JPEGImages":
        report = tmp_path / "evaluation.json"
        assert main(["evaluate", "segmentation", "--pred", str(tmp_path / "predict" / "masks"), "--gt",
                     str(data.images.parent / "SegmentationClass"), "--num-classes", "21", "--ignore-index",
                     "255", "--output", str(report)]) == 0  # fmt: skip
        assert json.loads(report.read_text())["images"] == 4
    (metrics_file,) = run.glob("test-*/test_metrics.json")
    assert 0.0 <= json.loads(metrics_file.read_text())["pixel_accuracy"] <= 1.0
    saved = yaml.safe_load(next(run.glob("test-*/config.yaml")).read_text())
    root = data.args[data.args.index("--data.init_args.root") + 1]
    assert saved["data"]["init_args"]["root"] == root


@pytest.mark.slow
@pytest.mark.parametrize("config", DETECTION)
def test_detection_config_fit_predict_export_validate_test(config, data_dir, tmp_path):
    run, path = tmp_path / "run", CONFIGS / "detection" / config
    data = tiny_data(path, data_dir, tmp_path)
    walk(path, data.args, run, data.images, tmp_path)
    task = load_task(run / "checkpoints" / "last.ckpt")
    shapes_coco = _shapes_coco(data_dir)
    categories = json.loads((shapes_coco / "annotations" / "train.json").read_text())["categories"]
    # the label space is linked from the data (4 shapes + slot 0), not the config's written 81 or 91
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert saved["model"]["init_args"]["num_classes"] == len(categories) + 1
    assert task.class_names[1:] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


LOSS_OVERRIDES = sorted(p.name for p in (CONFIGS / "segmentation" / "losses").glob("*.yaml"))
LOSS_TERMS = {"ce_dice.yaml": ["CrossEntropy", "Dice"], "ce_lovasz.yaml": ["CrossEntropy", "LovaszSoftmax"]}


def test_every_loss_override_is_known():
    assert LOSS_OVERRIDES == sorted(LOSS_TERMS)


@pytest.mark.slow
@pytest.mark.parametrize("override", LOSS_OVERRIDES)
def test_loss_override_layers_on_a_config_and_its_run_loads(override, data_dir, tmp_path):
    """A second ``--config`` swaps only the loss: the model, data and class weights of the first stay, and
    the run's checkpoint rebuilds the same loss for validate/predict."""
    run = tmp_path / "run"
    base = CONFIGS / "segmentation" / "camvid_cpu_budget.yaml"
    args = ["--config", str(base), "--config", str(CONFIGS / "segmentation" / "losses" / override)]
    args += [*tiny_data(base, data_dir, tmp_path).args]
    args += ["--trainer.default_root_dir", str(run)]
    assert main(["fit", *args, *ONE_BATCH]) == 0
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert type(task.model).__name__ == "FCDenseNet"
    assert [type(t).__name__ for t in task.criterion.terms] == LOSS_TERMS[override]
    weights = task.criterion.terms[0].class_weights
    assert weights is not None and weights.shape == (11,)  # the base config's class weighting survives
    assert main(["validate", *args, *ONE_BATCH, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) == 0
