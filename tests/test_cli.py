"""``densevision fit|validate|test|predict`` (LightningCLI): every segmentation config builds, the label
space is linked from the data module, and a tiny fit / validate / predict / resume runs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.cli import main, run_lightning_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
TINY_SHAPES = ["--data.init_args.image_size", "48", "--data.init_args.num_train", "4"]
TINY_SHAPES += [
    "--data.init_args.num_val",
    "2",
    "--data.init_args.num_test",
    "2",
    "--data.init_args.batch_size",
    "2",
]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# The demo config with a much smaller FC-DenseNet, for speed.
TINY_MODEL = [
    "--model.init_args.model.init_args.growth_rate",
    "4",
    "--model.init_args.model.init_args.down_blocks",
]
TINY_MODEL += ["[1, 1, 1, 1]", "--model.init_args.model.init_args.bottleneck_layers", "1"]
TINY_MODEL += ["--model.init_args.model.init_args.stem_channels", "8", "--trainer.num_sanity_val_steps", "0"]


@pytest.fixture(scope="module")
def tiny_camvid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CamVid's layout and label space (0..10, void 11) in a few 48x64 images."""
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            mask = rng.integers(0, 12, (48, 64), dtype=np.uint8)
            Image.fromarray(mask).save(root / f"{split}annot" / f"{i}.png")
    return root


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("camvid_*.yaml")))
def test_camvid_configs_build_with_linked_label_space(config: str, tiny_camvid: Path, tmp_path: Path) -> None:
    cli = run_lightning_cli(
        ["--config", str(CONFIGS / config), "--data.init_args.root", str(tiny_camvid)]
        + ["--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"],
        run=False,
    )
    task = cli.model
    assert task.num_classes == 11 and task.ignore_index == 11 and task.class_names[0] == "sky"
    assert task.model.num_classes == 11
    weighting = cli.datamodule.class_weighting
    assert (task.class_weights is None) == (weighting == "none")
    if task.class_weights is not None:
        assert task.class_weights.shape == (11,) and (task.class_weights > 0).all()
    # Loggers default to CSV + TensorBoard straight in the run folder.
    assert [Path(lg.log_dir) for lg in cli.trainer.loggers] == [tmp_path, tmp_path]


def test_demo_config_fast_dev_run(tmp_path: Path) -> None:
    main(
        ["fit", "--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(tmp_path / "shapes")]
        + TINY_SHAPES
        + TINY_MODEL
        + QUIET
        + ["--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path / "run")]
    )
    assert (tmp_path / "shapes" / "trainannot" / "00003.png").is_file()


def test_fit_validate_predict_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(tmp_path / "shapes")]
    common += (
        TINY_SHAPES
        + TINY_MODEL
        + QUIET
        + ["--trainer.default_root_dir", str(run), "--trainer.limit_val_batches", "1"]
    )
    fit = ["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    assert main(fit) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
    assert torch.load(last, weights_only=False)["global_step"] == 2

    assert main(["validate", *common, "--ckpt_path", str(last)]) == 0
    assert (run / "val_metrics.json").is_file()
    assert main(["predict", *common, "--ckpt_path", str(last)]) == 0
    pictures = sorted((run / "predictions").glob("0*.png"))
    assert [p.name for p in pictures] == ["00000.png", "00001.png"]

    # From scratch this run makes 2 steps (2 epochs x 1 batch); resumed, it continues after step 2.
    resume = ["fit", *common, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1"]
    assert main([*resume, "--ckpt_path", "last"]) == 0
    assert torch.load(last, weights_only=False)["global_step"] > 2


def test_config_typo_fails_when_parsed(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_lightning_cli(
            ["--config", str(CONFIGS / "demo.yaml"), "--model.init_args.model.init_args.growth_rat", "4"],
            run=False,
        )


def test_links_are_skipped_for_tasks_and_data_without_a_label_space(tmp_path: Path) -> None:
    boring = "lightning.pytorch.demos.boring_classes"
    cli = run_lightning_cli(
        ["--model", f"{boring}.BoringModel", "--data", f"{boring}.BoringDataModule"]
        + ["--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    assert type(cli.model).__name__ == "BoringModel"
