"""The dataset data modules take the base modules' options as typed keywords (``SegmentationDataOptions``,
``DetectionDataOptions``) over their own defaults: the defaults stay what each dataset documents, a value
given wins, and a typo in a YAML config still fails when the config is parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from densevision.datasets.ade20k import ADE20KDataModule
from densevision.datasets.cityscapes import CityscapesDataModule
from densevision.datasets.detection_datamodule import ShapesDetectionDataModule
from densevision.datasets.segmentation_datamodule import CamVidDataModule, ShapesDataModule
from densevision.datasets.voc import VOCSegmentationDataModule
from densevision.datasets.voc_detection import VOCDetectionDataModule
from densevision.tasks.lightning_cli import run_lightning_cli

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# module -> (batch_size, num_workers, crop_size, scale_range, (train, val, test, predict) splits, classes)
DEFAULTS = {
    ADE20KDataModule: (16, 4, (512, 512), (0.5, 2.0), ("training", *["validation"] * 3), 150),
    CityscapesDataModule: (8, 4, (512, 1024), (0.5, 2.0), ("train", "val", "val", "val"), 19),
    VOCSegmentationDataModule: (16, 4, (513, 513), (0.5, 2.0), ("train", "val", "val", "val"), 21),
    CamVidDataModule: (3, 0, (224, 224), (1.0, 1.0), ("train", "val", "test", "val"), 11),
    ShapesDataModule: (8, 0, None, (0.75, 1.5), ("train", "val", "test", "val"), 5),
}


@pytest.mark.parametrize("module", list(DEFAULTS), ids=lambda m: m.__name__)
def test_each_dataset_keeps_its_own_defaults(module, tmp_path: Path) -> None:
    batch_size, num_workers, crop_size, scale_range, splits, num_classes = DEFAULTS[module]
    data = module(str(tmp_path))
    assert (data.batch_size, data.num_workers, data.num_classes) == (batch_size, num_workers, num_classes)
    assert tuple(data.splits.values()) == splits
    assert len(data.class_names) == len(data.palette) == num_classes
    crops = [t for t in data.train_transform.transforms if type(t).__name__ == "RandomCrop"]
    assert [(c.height, c.width) for c in crops] == ([crop_size] if crop_size else [])
    scales = [t.scale_limit for t in data.train_transform.transforms if type(t).__name__ == "RandomScale"]
    assert scales == ([(scale_range[0] - 1, scale_range[1] - 1)] if crop_size else [])


def test_a_given_option_wins_over_the_dataset_default(tmp_path: Path) -> None:
    data = CityscapesDataModule(str(tmp_path), batch_size=2, test_split="test", mean=(0.5, 0.5, 0.5))
    assert (data.batch_size, data.num_workers, data.splits["test"], data.mean) == (2, 4, "test", (0.5,) * 3)


def test_detection_modules_pass_their_options_on(tmp_path: Path) -> None:
    shapes = ShapesDetectionDataModule(str(tmp_path), batch_size=3, with_masks=True, image_size=96)
    assert (shapes.batch_size, shapes.num_workers, shapes.with_masks, shapes.image_size) == (3, 0, True, 96)
    voc = VOCDetectionDataModule(str(tmp_path / "VOC2007"), num_workers=2)
    assert (voc.batch_size, voc.num_workers, voc.image_size, voc.with_masks) == (4, 2, None, False)


def test_a_typo_in_a_dataset_option_fails_when_the_config_is_parsed(tmp_path: Path, capsys) -> None:
    config = CONFIGS / "segmentation" / "cityscapes_denseaspp161.yaml"
    with pytest.raises(SystemExit):
        run_lightning_cli(["--config", str(config), "--data.init_args.batch_sise", "2"], run=False)
    assert "batch_sise" in capsys.readouterr().err


def test_options_from_a_config_reach_the_module_and_the_links(tmp_path: Path) -> None:
    config = CONFIGS / "segmentation" / "demo.yaml"
    cli = run_lightning_cli(
        ["--config", str(config), "--data.init_args.root", str(tmp_path), "--data.init_args.batch_size", "2",
         "--data.init_args.mean", "[0.5, 0.5, 0.5]", "--trainer.default_root_dir", str(tmp_path / "run")],
        run=False,
    )  # fmt: skip
    assert cli.datamodule.batch_size == 2
    assert tuple(cli.model.mean) == (0.5, 0.5, 0.5)
    assert cli.model.num_classes == cli.datamodule.num_classes == 5
