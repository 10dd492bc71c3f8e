"""Every config in ``configs/`` walks the user's path: ``fit`` for a batch on tiny generated data, then the
run's checkpoint loads in ``densevision predict`` (image files, no config), ``export``, ``validate`` and
``test``, with no hand edits. Models keep their architecture (only image sizes and batch counts shrink),
so what a real run writes is what is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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


@pytest.fixture(scope="module")
def camvid_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CamVid's layout, label space and frame names (two sequences) in a few 72x96 images."""
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for name in ("0006R0_f0", "0016E5_f0", "0016E5_f1"):
            Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(
                root / split / f"{name}.png"
            )
            mask = rng.integers(0, 12, (72, 96), dtype=np.uint8)
            Image.fromarray(mask).save(root / f"{split}annot" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_shapes_detection_dataset(
        tmp_path_factory.mktemp("det"), num_train=4, num_val=2, image_size=64
    )


def segmentation_data_args(config: str, camvid: Path, tmp_path: Path) -> list[str]:
    if config == "demo.yaml":  # the generated shapes set: smaller and fewer images
        return ["--data.init_args.root", str(tmp_path / "shapes"), "--data.init_args.image_size", "64"]
    if config == "custom.yaml":  # the own-data template: the user states the label space
        label_space = ["--data.init_args.num_classes", "11", "--data.init_args.ignore_index", "11"]
        return ["--data.init_args.root", str(camvid), "--data.init_args.resize", "[64, 80]", *label_space]
    return ["--data.init_args.root", str(camvid), "--data.init_args.resize", "[64, 80]"] + [
        "--data.init_args.crop_size", "[64, 64]"]  # fmt: skip


def detection_data_args(config: str, coco: Path) -> list[str]:
    if config == "demo.yaml":
        return ["--data.init_args.root", str(coco.parent / "demo_shapes"), "--data.init_args.num_train", "4",
                "--data.init_args.num_val", "2", "--data.init_args.dataset_image_size", "64"]  # fmt: skip
    size = [
        "--model.init_args.model.init_args.min_size",
        "64",
        "--model.init_args.model.init_args.max_size",
        "64",
    ]
    return size + [
        "--data.init_args.train_images", str(coco / "images"),
        "--data.init_args.train_annotations", str(coco / "annotations" / "train.json"),
        "--data.init_args.val_images", str(coco / "images"),
        "--data.init_args.val_annotations", str(coco / "annotations" / "val.json"),
    ]  # fmt: skip


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
    assert (
        main(
            ["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(tmp_path / "x")]
        )
        == 0
    )
    assert list((tmp_path / "x").glob("*.pt"))
    for stage in ("validate", "test"):
        assert main([stage, *common, *ONE_BATCH, "--ckpt_path", str(ckpt)]) == 0


@pytest.mark.parametrize("config", SEGMENTATION)
def test_segmentation_config_fit_predict_export_validate_test(config, camvid_like, tmp_path):
    run = tmp_path / "run"
    walk(CONFIGS / "segmentation" / config, segmentation_data_args(config, camvid_like, tmp_path), run,
         camvid_like / "test", tmp_path)  # fmt: skip
    task = load_task(run / "checkpoints" / "last.ckpt")
    if config != "demo.yaml":
        assert task.input_size == (64, 80)  # predictions see the training resolution
        masks = sorted((tmp_path / "predict" / "masks").iterdir())
        assert [Image.open(m).size for m in masks] == [(96, 72)] * 3  # at each image's own size
    assert list(run.glob("test-*/test_metrics.json"))  # each command writes its own folder


@pytest.mark.parametrize("config", DETECTION)
def test_detection_config_fit_predict_export_validate_test(config, shapes_coco, tmp_path):
    run = tmp_path / "run"
    data = detection_data_args(config, shapes_coco)
    walk(CONFIGS / "detection" / config, data, run, shapes_coco / "images", tmp_path)
    task = load_task(run / "checkpoints" / "last.ckpt")
    categories = json.loads((shapes_coco / "annotations" / "train.json").read_text())["categories"]
    # the label space is linked from the data (4 shapes + slot 0), not the config's written 81 or 91
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert saved["model"]["init_args"]["num_classes"] == len(categories) + 1
    assert task.class_names[1:] == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


LOSS_OVERRIDES = sorted(p.name for p in (CONFIGS / "segmentation" / "losses").glob("*.yaml"))
LOSS_TERMS = {"ce_dice.yaml": ["CrossEntropy", "Dice"], "ce_lovasz.yaml": ["CrossEntropy", "LovaszSoftmax"]}


def test_every_loss_override_is_known():
    assert LOSS_OVERRIDES == sorted(LOSS_TERMS)


@pytest.mark.parametrize("override", LOSS_OVERRIDES)
def test_loss_override_layers_on_a_config_and_its_run_loads(override, camvid_like, tmp_path):
    """A second ``--config`` swaps only the loss: the model, data and class weights of the first stay, and
    the run's checkpoint rebuilds the same loss for validate/predict."""
    run = tmp_path / "run"
    base = CONFIGS / "segmentation" / "camvid_cpu_budget.yaml"
    args = ["--config", str(base), "--config", str(CONFIGS / "segmentation" / "losses" / override)]
    args += [*segmentation_data_args("camvid_cpu_budget.yaml", camvid_like, tmp_path)]
    args += ["--trainer.default_root_dir", str(run)]
    assert main(["fit", *args, *ONE_BATCH]) == 0
    task = load_task(run / "checkpoints" / "last.ckpt")
    assert type(task.model).__name__ == "FCDenseNet"
    assert [type(t).__name__ for t in task.criterion.terms] == LOSS_TERMS[override]
    weights = task.criterion.terms[0].class_weights
    assert weights is not None and weights.shape == (11,)  # the base config's class weighting survives
    assert main(["validate", *args, *ONE_BATCH, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) == 0
