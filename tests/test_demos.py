"""`densevision demo` argument routing."""

from __future__ import annotations

import sys
import types

import pytest

from densevision.apps import demo as demos


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    fake = types.ModuleType("fake_demo")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_demo", fake)
    monkeypatch.setattr(demos, "DEMOS", {"segmentation": "fake_demo", "detection": "fake_demo"})
    return calls


def test_options_without_a_task_go_to_the_segmentation_demo(recorded):
    assert demos.main(["--max-epochs", "3"]) == 0
    assert recorded == [["--max-epochs", "3"]]


def test_named_task_receives_the_rest(recorded):
    demos.main(["detection", "--max-epochs", "2"])
    assert recorded == [["--max-epochs", "2"]]


def test_unknown_task_is_named(recorded):
    with pytest.raises(SystemExit, match="unknown task 'nope'"):
        demos.main(["nope"])


def test_both_demos_write_runs_name_timestamp(tmp_path, monkeypatch):
    """runs/<demo>/<YYYYmmdd-HHMMSS>/, a fresh folder each time (the detection demo ran into version_N)."""
    import re
    from pathlib import Path

    from densevision.apps import new_run_dir
    from densevision.apps.demo_detection import main as detection_demo

    monkeypatch.chdir(tmp_path)
    first = new_run_dir("demo-segmentation")
    assert re.fullmatch(r"runs/demo-segmentation/\d{8}-\d{6}", first.as_posix())
    first.mkdir(parents=True)
    assert new_run_dir("demo-segmentation") != first  # never into an existing run
    tiny = ["--max-epochs", "1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--data.init_args.root={tmp_path / 'data'}",
            "--data.init_args.num_train=2",
            "--data.init_args.num_val=2", "--data.init_args.dataset_image_size=64",
            "--data.init_args.batch_size=2", "--trainer.check_val_every_n_epoch=1",
            "--model.init_args.model.init_args.min_size=64", "--model.init_args.model.init_args.max_size=64"]
    assert detection_demo(tiny) == 0
    (run,) = Path("runs/demo-detection").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run.name)
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "coco_metrics.json").is_file()
    assert (run / "config.yaml").is_file() and len(list((run / "predictions").glob("*.png"))) == 2


def test_an_unknown_demo_is_a_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        demos.main(["segmentaton"])
    assert stop.value.code == 2
    assert "error: densevision demo: unknown task 'segmentaton'" in capsys.readouterr().err
