"""The Cityscapes, VOC and ADE20K configs run as written on miniature replicas of their datasets: ``fit`` for
a batch (``densevision.cli.run_lightning_cli``); on each replica one config's checkpoint then predicts image
files and is scored by ``densevision test`` against the replica's labels, the benchmark's mapping applied
(DenseASPP-161 only fits: the walk is the same as FC-HarDNet's on the same replica, at five times the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from densevision.cli import main, run_lightning_cli
from densevision.tasks.checkpoints import load_task
from tests.datasets.replicas import ade20k_replica, cityscapes_replica, voc_replica

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmentation"
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
        "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]  # fmt: skip
# config -> (replica builder, root below the temporary folder, num_classes, the folder of images predict
# reads or None (built only: the every-config walk trains it), training crop: FC-HarDNet's total stride
# is 64, DenseNet-161 at stride 8 is the slowest model on a CPU)
CITY_VAL, ADE_VAL = "leftImg8bit/val/frankfurt", "images/validation"
BENCHMARKS = {
    "cityscapes_denseaspp161.yaml": (cityscapes_replica, "cityscapes", 19, None, "[32, 32]"),
    "cityscapes_fchardnet70.yaml": (cityscapes_replica, "cityscapes", 19, CITY_VAL, "[64, 64]"),
    "voc_deeplabv3plus121.yaml": (voc_replica, "VOCdevkit/VOC2012", 21, "JPEGImages", "[32, 32]"),
    "ade20k_deeplabv3plus121.yaml": (ade20k_replica, "ADEChallengeData2016", 150, ADE_VAL, "[32, 32]"),
}


def test_every_benchmark_config_is_covered():
    named = {p.name for p in CONFIGS.glob("*.yaml") if p.name.startswith(("cityscapes_", "voc_", "ade20k_"))}
    assert named == set(BENCHMARKS)


@pytest.mark.parametrize("config", sorted(BENCHMARKS))
def test_benchmark_config_fits_predicts_and_tests_on_its_replica(config, tmp_path):
    build, relative, num_classes, images, crop = BENCHMARKS[config]
    root = build(tmp_path / relative)
    run = tmp_path / "run"
    common = ["--config", str(CONFIGS / config), "--data.init_args.root", str(root),
              "--trainer.default_root_dir", str(run), "--data.init_args.crop_size", crop, *TINY]  # fmt: skip
    if "sliding_window" in (CONFIGS / config).read_text():  # windows smaller than the replica's 64x128 frames
        common += ["--model.init_args.sliding_window.window_size", "[64, 64]"]
    # fit only: built, not trained (tests/test_every_config_end_to_end.py trains it on the same replica)
    cli = run_lightning_cli(["fit", *common]) if images is not None else run_lightning_cli(common, run=False)
    assert cli.model.num_classes == num_classes == len(cli.datamodule.palette)
    assert cli.model.ignore_index == 255 and cli.model.class_names == cli.datamodule.class_names
    if images is None:
        return
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert load_task(ckpt).num_classes == num_classes

    out = tmp_path / "predicted"
    predict = ["predict", "--checkpoint", str(ckpt), "--input", str(root / images), "--output", str(out)]
    assert main(predict) == 0
    sources = sorted((root / images).iterdir())
    masks = sorted((out / "masks").iterdir())
    assert [Image.open(m).size for m in masks] == [Image.open(s).size for s in sources]  # each its own size
    if relative.startswith("VOC"):  # VOC's label PNGs hold the training ids: scored as they are on disk
        report = tmp_path / "evaluation.json"
        assert main(["evaluate", "segmentation", "--pred", str(out / "masks"), "--gt",
                     str(root / "SegmentationClass"), "--num-classes", "21", "--ignore-index", "255",
                     "--output", str(report)]) == 0  # fmt: skip
        assert json.loads(report.read_text())["images"] == 4

    assert main(["test", *common, "--ckpt_path", str(ckpt)]) == 0
    (metrics_file,) = run.glob("test-*/test_metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
    saved = yaml.safe_load(next(run.glob("test-*/config.yaml")).read_text())
    assert saved["data"]["init_args"]["root"] == str(root)
