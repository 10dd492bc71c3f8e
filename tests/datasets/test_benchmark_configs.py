"""The Cityscapes, VOC and ADE20K configs parse and build as written on miniature replicas of their datasets
(``densevision.cli.run_lightning_cli`` without a subcommand), with the benchmark's label space linked from
the data module. Their runs (fit, predict at each frame's size, VOC's masks scored by ``densevision
evaluate``, ``test`` against the replica's labels) are walked once, in
``tests/test_every_config_end_to_end.py``, which trains every config on the same replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from densevision.cli import run_lightning_cli
from tests.datasets.replicas import ade20k_replica, cityscapes_replica, voc_replica

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmentation"
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
        "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]  # fmt: skip
# config -> (replica builder, root below the temporary folder, num_classes, training crop: FC-HarDNet's
# total stride is 64)
BENCHMARKS = {
    "cityscapes_denseaspp161.yaml": (cityscapes_replica, "cityscapes", 19, "[32, 32]"),
    "cityscapes_fchardnet70.yaml": (cityscapes_replica, "cityscapes", 19, "[64, 64]"),
    "voc_deeplabv3plus121.yaml": (voc_replica, "VOCdevkit/VOC2012", 21, "[32, 32]"),
    "ade20k_deeplabv3plus121.yaml": (ade20k_replica, "ADEChallengeData2016", 150, "[32, 32]"),
}


def test_every_benchmark_config_is_covered():
    named = {p.name for p in CONFIGS.glob("*.yaml") if p.name.startswith(("cityscapes_", "voc_", "ade20k_"))}
    assert named == set(BENCHMARKS)


@pytest.mark.parametrize("config", sorted(BENCHMARKS))
def test_benchmark_config_builds_with_its_label_space_on_its_replica(config, tmp_path):
    build, relative, num_classes, crop = BENCHMARKS[config]
    root = build(tmp_path / relative)
    common = ["--config", str(CONFIGS / config), "--data.init_args.root", str(root),
              "--trainer.default_root_dir", str(tmp_path / "run"), "--data.init_args.crop_size", crop,
              *TINY]  # fmt: skip
    cli = run_lightning_cli(common, run=False)
    assert cli.model.num_classes == num_classes == len(cli.datamodule.palette)
    assert cli.model.ignore_index == 255 and cli.model.class_names == cli.datamodule.class_names
