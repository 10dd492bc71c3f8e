"""Each private API of Lightning or jsonargparse that ``densevision.tasks.private_apis`` holds, checked
against the installed version: a test fails, naming the adapter function, when the dependency changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser

from densevision.tasks.lightning_cli import DenseVisionCLI, run_lightning_cli
from densevision.tasks.private_apis import config_given_by_cli, drop_linked_targets

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_config_given_by_cli_reads_what_lightning_cli_hands_the_task(tmp_path: Path) -> None:
    assert config_given_by_cli() is None  # outside LightningCLI
    cli = run_lightning_cli(
        ["--config", str(CONFIGS / "segmentation" / "demo.yaml"), "--data.init_args.root", str(tmp_path)]
        + ["--trainer.default_root_dir", str(tmp_path / "run"), "--data.init_args.num_train", "2"]
        + ["--data.init_args.num_val", "1", "--data.init_args.num_test", "1"]
        + ["--data.init_args.image_size", "32"],
        run=False,
    )
    saved = cli.model.hparams
    # if Lightning stops handing the config through `_given_hyperparameters`, `model` is an object here
    assert saved["_class_path"] == "densevision.tasks.segmentation.SegmentationTask", (
        "Lightning changed: adapt densevision.tasks.private_apis.config_given_by_cli"
    )
    assert saved["model"]["class_path"].endswith("FCDenseNet")
    assert saved["num_classes"] == cli.datamodule.num_classes


def test_jsonargparse_still_needs_drop_linked_targets(tmp_path: Path, capsys) -> None:
    """When this fails, jsonargparse accepts its own ``linked_targets`` again: remove
    ``densevision.tasks.private_apis.drop_linked_targets`` and ``DenseVisionArgumentParser``'s override."""
    args = ["--config", str(CONFIGS / "segmentation" / "camvid_fcdensenet56.yaml")]
    args += ["--data.init_args.root", str(tmp_path), "--trainer.default_root_dir", str(tmp_path / "run")]
    with pytest.raises(BaseException) as failure:  # noqa: PT011 (jsonargparse reports it in several ways)
        DenseVisionCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            args=args, run=False, auto_configure_optimizers=False, parser_class=LightningArgumentParser,
            parser_kwargs={"exit_on_error": False},
        )
    assert "linked_targets" in str(failure.value) + capsys.readouterr().err
    assert drop_linked_targets({"linked_targets": {"a"}, "nested_key": "m"}) == {"nested_key": "m"}
