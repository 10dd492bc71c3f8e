"""A newcomer's first commands (issue 29), walked from a folder of the user's: the shipped configs found by
name, the config a fit saved reused by validate / test / predict, ``--ckpt_path best`` and ``last``
whatever callbacks a config has, and failed commands that leave nothing behind. The first fit and the
``--debug`` traceback run as subprocesses (the command as a user types it); the others call
``densevision.cli.main`` in this process, with the same arguments, exit codes and streams, to save the
start-up time of a process per command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from densevision.apps.demo_detection import ap_summary
from densevision.cli import main
from densevision.datasets.segmentation_datamodule import CamVidDataModule
from densevision.tasks.lightning_cli import fit_summary, packaged_config
from tests.cli_subprocess import TINY, densevision, make_own_dataset

OWN = ["--data.init_args.root", "data/my_data", "--data.init_args.num_classes", "3"]
# only the model and the two data values a user must give: no trainer settings, callbacks or run folder
MINIMAL = {
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {
        "class_path": "densevision.tasks.segmentation.SegmentationTask",
        "init_args": {"model": {"class_path": "densevision.models.segmentation.tiramisu.FCDenseNet",
                                "init_args": {"growth_rate": 4, "down_blocks": [1, 1], "bottleneck_layers": 1,
                                              "stem_channels": 8}}},
    },
    "data": {"class_path": "densevision.datasets.segmentation_datamodule.SegmentationDataModule",
             "init_args": {"root": "data/my_data", "num_classes": 3, "batch_size": 2}},
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def dv(capsys):
    """``densevision *args`` in this process, in the current folder."""

    def run(_folder: Path, *args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as stop:  # usage errors exit 2 from the parser, as in the console script
            code = stop.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _one_error_line(result, exit_code: int = 1) -> str:
    assert result.returncode == exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Namespace(" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder with own data, after `densevision fit --config segmentation/custom.yaml` (the shipped
    template used by name, from a folder without configs/)."""
    folder = tmp_path_factory.mktemp("user")
    make_own_dataset(folder / "data" / "my_data")
    fit = densevision(folder, "fit", "--config", "segmentation/custom.yaml", *OWN, *TINY)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = folder / "runs" / "custom"
    assert f"best checkpoint  {Path('runs/custom/checkpoints/best.ckpt')} (val/mIoU " in fit.stdout
    assert "last checkpoint  runs/custom/checkpoints/last.ckpt" in fit.stdout
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    return folder


def _snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_the_config_a_fit_saved_runs_validate_and_predict_in_folders_of_their_own(
    user: Path, dv, monkeypatch
) -> None:
    monkeypatch.chdir(user)
    run = user / "runs" / "custom"
    before = _snapshot(run)
    for command in ("validate", "predict"):
        result = dv(user, command, "--config", "runs/custom/config.yaml",
                             "--ckpt_path", "runs/custom/checkpoints/best.ckpt")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "SaveConfigCallback" not in result.stderr
    (validate,), (predict,) = run.glob("validate-*"), run.glob("predict-*")
    assert (validate / "val_metrics.json").is_file() and (validate / "config.yaml").is_file()
    assert list((predict / "predictions").glob("*.png"))
    # the fit's files as the fit left them, and nothing new beside them
    after = {p: b for p, b in _snapshot(run).items() if not p.is_relative_to(validate)}
    assert {p: b for p, b in after.items() if not p.is_relative_to(predict)} == before


def test_ckpt_path_best_is_the_checkpoint_the_run_monitored_best(user: Path, dv, monkeypatch) -> None:
    monkeypatch.chdir(user)
    earlier = set((user / "runs" / "custom").glob("validate-*"))
    result = dv(user, "validate", "--config", "runs/custom/config.yaml", "--ckpt_path", "best")
    assert result.returncode == 0, result.stderr[-3000:]
    (validate,) = set((user / "runs" / "custom").glob("validate-*")) - earlier
    used = yaml.safe_load((validate / "config.yaml").read_text())["ckpt_path"]
    assert used == str(Path("runs/custom/checkpoints/best.ckpt"))


def test_test_without_a_test_split_leaves_nothing_and_any_split_can_be_tested(
    user: Path, dv, monkeypatch
) -> None:
    monkeypatch.chdir(user)
    run = user / "runs" / "custom"
    before = _snapshot(run)
    failed = dv(user, "test", "--config", "runs/custom/config.yaml", "--ckpt_path", "last")
    assert f"image folder {Path('data/my_data/test')} does not exist" in _one_error_line(failed)
    assert _snapshot(run) == before and not list(run.glob("test-*"))
    on_val = dv(user, "test", "--config", "runs/custom/config.yaml", "--ckpt_path", "last",
                         "--data.init_args.test_split", "val")
    assert on_val.returncode == 0, on_val.stderr[-3000:]
    (test,) = run.glob("test-*")
    assert (test / "test_metrics.json").is_file()
    assert CamVidDataModule("camvid", test_split="val").splits["test"] == "val"


def test_a_minimal_config_gets_the_guarantees_of_the_shipped_ones(tmp_path: Path, dv, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_own_dataset(tmp_path / "data" / "my_data")
    (tmp_path / "min.yaml").write_text(yaml.safe_dump(MINIMAL))
    fit = dv(tmp_path, "fit", "--config", "min.yaml")
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "runs" / "min"  # no default_root_dir: runs/<config name>, not lightning_logs/version_N
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "lightning_logs").exists()
    assert "last checkpoint  runs/min/checkpoints/last.ckpt" in fit.stdout
    assert "best checkpoint" not in fit.stdout  # nothing was monitored
    again = dv(tmp_path, "fit", "--config", "min.yaml")
    assert f"{Path('runs/min')} already holds a run" in _one_error_line(again)
    resumed = dv(tmp_path, "fit", "--config", "min.yaml", "--ckpt_path", "last",
                          "--trainer.max_epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    before = _snapshot(run)
    best = dv(tmp_path, "validate", "--config", "min.yaml", "--ckpt_path", "best")
    assert "--ckpt_path best: the run in runs/min monitored no metric" in _one_error_line(best)
    assert _snapshot(run) == before and not list(run.glob("validate-*"))


def test_a_data_module_error_is_one_sentence_and_leaves_no_run_folder(
    tmp_path: Path, dv, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_own_dataset(tmp_path / "data" / "my_data")
    (tmp_path / "min.yaml").write_text(yaml.safe_dump(MINIMAL))
    result = dv(tmp_path, "fit", "--config", "min.yaml", "--data.init_args.augment", "scale_crop")
    line = _one_error_line(result)
    assert "augment='scale_crop' needs crop_size" in line and "SegmentationDataModule" in line
    assert "Subtypes" not in result.stderr and not (tmp_path / "runs").exists()
    debug = densevision(tmp_path, "fit", "--config", "min.yaml", "--data.init_args.augment", "scale_crop",
                        env={"DENSEVISION_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "No seed found" not in debug.stderr  # seeded (with Lightning's own default, 0) without the note


def test_shipped_configs_are_listed_copied_and_missing_ones_say_where_they_were_looked_for(
    tmp_path: Path, monkeypatch, capsys, dv
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["configs", "list"]) == 0
    assert "  segmentation/custom.yaml" in capsys.readouterr().out
    assert main(["configs", "copy", "segmentation/custom.yaml", "my.yaml"]) == 0
    assert (tmp_path / "my.yaml").read_bytes() == packaged_config("segmentation/custom.yaml").read_bytes()
    (tmp_path / "my.yaml").write_text("# edited")
    assert main(["configs", "copy", "segmentation/custom.yaml", "my.yaml"]) == 1
    assert "my.yaml exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "my.yaml").read_text() == "# edited"  # not overwritten
    missing = dv(tmp_path, "fit", "--config", "segmentation/nope.yaml")
    line = _one_error_line(missing, exit_code=2)
    assert f"not in {tmp_path} nor among the shipped configs in {packaged_config('')}" in line


def test_the_fit_summary_reads_the_last_checkpoint_as_ddp_spawn_leaves_the_main_process(user: Path) -> None:
    """Under ``ddp_spawn`` the main process's ModelCheckpoint knows neither the last checkpoint nor the best
    score; the summary comes from the last checkpoint's record and matches the fit's."""
    run = user / "runs" / "custom"
    callback = ModelCheckpoint(dirpath=str(run / "checkpoints"), monitor="val/mIoU", save_last=True)
    trainer = type("SpawnedTrainer", (), {"checkpoint_callback": callback, "default_root_dir": str(run)})()
    summary = fit_summary(trainer, run)
    assert "best checkpoint" in summary and "(val/mIoU 0." in summary
    assert f"last checkpoint  {run / 'checkpoints' / 'last.ckpt'} (resume: --ckpt_path last)" in summary


def test_detection_summary_says_n_a_for_sizes_without_objects() -> None:
    line = ap_summary({"AP": 0.5, "AP50": 0.9, "AP75": 0.4, "APs": 0.3, "APm": 0.6, "APl": -1.0})
    assert line.endswith("APm 0.600, APl n/a (no large objects)") and "-1.000" not in line
