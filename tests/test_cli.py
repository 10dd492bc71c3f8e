"""``densevision fit|validate|test|predict`` (LightningCLI): every segmentation config builds, the label
space is linked from the data module, a tiny fit / validate / predict / resume runs end to end and leaves
each command's files in place, and user errors read as one sentence."""

from __future__ import annotations

import csv
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
    # Loggers default to CSV + TensorBoard straight in the run folder; checkpoints go to <run>/checkpoints
    assert [Path(lg.log_dir) for lg in cli.trainer.loggers] == [tmp_path, tmp_path]
    assert [Path(c.dirpath) for c in cli.trainer.checkpoint_callbacks] == [tmp_path / "checkpoints"]


def test_demo_config_fast_dev_run(tmp_path: Path) -> None:
    main(
        ["fit", "--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(tmp_path / "shapes")]
        + TINY_SHAPES
        + TINY_MODEL
        + QUIET
        + ["--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path / "run")]
    )
    assert (tmp_path / "shapes" / "trainannot" / "00003.png").is_file()


def _common(tmp_path: Path, run: Path) -> list[str]:
    common = ["--config", str(CONFIGS / "demo.yaml"), "--data.init_args.root", str(tmp_path / "shapes")]
    return common + TINY_SHAPES + TINY_MODEL + QUIET + [
        "--trainer.default_root_dir", str(run), "--trainer.limit_val_batches", "1"
    ]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_validate_predict_and_resume_keep_every_command_s_files(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    common = _common(tmp_path, run)
    fit = ["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    assert main(fit) == 0
    out = capsys.readouterr().out
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best.ckpt"
    assert last.is_file() and best.is_file()
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
    assert torch.load(last, weights_only=False)["global_step"] == 2
    # fit ends by saying where the run, its best checkpoint and that checkpoint's metric are
    assert f"run folder       {run}" in out and f"best checkpoint  {best} (val/mIoU 0." in out
    kept = (run / "metrics.csv", run / "config.yaml", run / "val_metrics.json")
    fit_files = {p: p.read_bytes() for p in kept}

    assert main(["validate", *common, "--ckpt_path", str(last)]) == 0
    assert main(["predict", *common, "--ckpt_path", str(last)]) == 0
    # each command wrote a folder of its own; the fit's files are as the fit left them
    (validate,), (predict,) = run.glob("validate-*"), run.glob("predict-*")
    assert (validate / "val_metrics.json").is_file() and (validate / "config.yaml").is_file()
    assert any("val/mIoU" in row and row["val/mIoU"] for row in _rows(validate / "metrics.csv"))
    pictures = sorted((predict / "predictions").glob("0*.png"))
    assert [p.name for p in pictures] == ["00000.png", "00001.png"]
    assert {p: p.read_bytes() for p in fit_files} == fit_files

    # From scratch this run makes 2 steps (2 epochs x 1 batch); resumed, it continues after step 2.
    resume = ["fit", *common, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1"]
    assert main([*resume, "--ckpt_path", "last"]) == 0
    assert torch.load(last, weights_only=False)["global_step"] > 2
    # the metrics history keeps the epoch before the resume; the resume's config sits beside the first
    epochs = {row["epoch"] for row in _rows(run / "metrics.csv")}
    assert epochs == {"0", "1"}
    assert (run / "config.yaml").read_bytes() == fit_files[run / "config.yaml"]
    assert len(list(run.glob("config-resume-*.yaml"))) == 1


def test_a_second_fit_into_a_run_folder_is_refused_with_the_resume_command(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"old run")
    fit = ["fit", *_common(tmp_path, run), "--trainer.max_epochs", "1"]
    assert main(fit) == 1
    err = capsys.readouterr().err
    assert f"{run} already holds a run (best.ckpt): resume it with --ckpt_path last" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run.rglob("*")) == ["best.ckpt", "checkpoints"]  # nothing written


def test_ckpt_path_last_with_nothing_to_resume_says_where_it_looked(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["fit", *_common(tmp_path, run), "--ckpt_path", "last"]) == 1
    err = capsys.readouterr().err
    assert f"--ckpt_path last: nothing to resume: {run / 'checkpoints'} does not exist" in err
    assert not (run / "config.yaml").exists()


def test_resume_finds_its_checkpoints_whatever_logger_the_config_sets(tmp_path: Path) -> None:
    run, logs = tmp_path / "run", tmp_path / "logs"
    # a versioned logger elsewhere: a resume logs into a new version, its checkpoints stay in <run>
    common = _common(tmp_path, run) + ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                                       "--trainer.logger.save_dir", str(logs)]
    last = run / "checkpoints" / "last.ckpt"
    assert main(["fit", *common, "--trainer.max_epochs", "1"]) == 0
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert (logs / "lightning_logs" / "version_0").is_dir()
    assert main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 4  # 2 epochs of 2 batches: one before, one after


def test_a_checkpoint_of_another_model_is_one_sentence(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    common = _common(tmp_path, run)
    assert main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]) == 0
    capsys.readouterr()
    wider = [*common, "--model.init_args.model.init_args.growth_rate", "6"]
    assert main(["validate", *wider, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) == 1
    err = capsys.readouterr().err
    assert "does not fit this config's model: " in err and "tensor(s) shapes differ" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 3


def test_user_errors_are_one_sentence_without_a_traceback(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:  # jsonargparse: a config error, without its usage dump
        main(["fit", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "nope.yaml" in err and len(err.splitlines()) <= 2
    camvid = ["fit", "--config", str(CONFIGS / "camvid_fcdensenet56.yaml"), "--data.init_args.root",
              str(tmp_path / "no_camvid"), "--trainer.default_root_dir", str(tmp_path / "run")]
    assert main(camvid) == 1
    err = capsys.readouterr().err
    assert f"image folder {tmp_path / 'no_camvid' / 'train'} does not exist" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--debug", *camvid])


def test_third_party_noise_is_silenced(tmp_path: Path, capfd) -> None:
    run = tmp_path / "run"
    assert main(["fit", *_common(tmp_path, run), "--trainer.fast_dev_run", "true"]) == 0
    out, err = capfd.readouterr()
    for noise in ("LightningCLI's args parameter", "💡 Tip", "LeafSpec"):
        assert noise not in out + err, noise


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
