"""configs/detection through LightningCLI: every YAML parses and builds; the demo config on tiny data runs
a 2-step fit / validate / predict that leaves metrics, a checkpoint, pictures and COCO results (a stricter
check than ``fast_dev_run``, which skips loggers and checkpoints, at the cost of one run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densevision.cli import main, run_lightning_cli
from densevision.datasets.detection_datamodule import CocoDetectionDataModule
from densevision.datasets.shapes_detection import ensure_shapes_detection_dataset
from densevision.tasks.detection import DetectionTask

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "detection").glob("*.yaml"))
DEMO = next(c for c in CONFIGS if c.name == "demo.yaml")


def _tiny(tmp_path: Path) -> list[str]:
    """Overrides shrinking the demo config: 4 + 2 images of 64 px, 64 px detector input, runs in tmp_path."""
    return [
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.num_train=4",
        "--data.init_args.num_val=2", "--data.init_args.dataset_image_size=64",
        "--data.init_args.batch_size=2",
        "--model.init_args.model.init_args.min_size=64", "--model.init_args.model.init_args.max_size=64",
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_detection_config_parses_and_builds(config, tmp_path):
    # the data paths point at a tiny generated dataset: the label space is read from its json when the
    # data module's num_classes is linked into the detector
    root = ensure_shapes_detection_dataset(tmp_path, num_train=2, num_val=1, image_size=64)
    paths = [] if config.name == "demo.yaml" else [
        f"--data.init_args.train_images={root / 'images'}",
        f"--data.init_args.train_annotations={root / 'annotations/train.json'}",
        f"--data.init_args.val_images={root / 'images'}",
        f"--data.init_args.val_annotations={root / 'annotations/val.json'}",
    ]
    cli = run_lightning_cli(["--config", str(config), *paths], run=False)
    assert isinstance(cli.model, DetectionTask) and isinstance(cli.datamodule, CocoDetectionDataModule)
    # class slots = categories + background slot 0, linked from the data module
    detector = cli.model.model
    if hasattr(detector, "roi_heads"):
        num_classes = detector.roi_heads.box_predictor.cls_score.out_features
    else:
        num_classes = detector.head.classification_head.num_classes
    assert num_classes == cli.datamodule.num_classes == 5
    # names and COCO ids travel with the task (its checkpoint) to densevision predict
    assert cli.model.class_names == cli.datamodule.class_names and len(cli.model.category_ids) == 5
    # checkpoints in <run>/checkpoints whatever the logger: where --ckpt_path last looks
    run = Path(cli.trainer.default_root_dir)
    assert [Path(c.dirpath) for c in cli.trainer.checkpoint_callbacks] == [run / "checkpoints"]


def test_fit_validate_predict_two_steps_through_the_cli(tmp_path):
    tiny = _tiny(tmp_path)
    fit = ["fit", "--config", str(DEMO), *tiny, "--trainer.limit_train_batches=2",
           "--trainer.check_val_every_n_epoch=1"]
    assert main([*fit, "--trainer.max_epochs=1"]) == 0
    run = tmp_path / "run"
    history = json.loads((run / "coco_metrics.json").read_text())
    assert len(history) == 1 and 0 <= history[0]["AP50"] <= 1
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    # the demo config's run resumes (it used to set a logger of its own, whose versions hid the checkpoint)
    assert main([*fit, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0
    history = json.loads((run / "coco_metrics.json").read_text())
    assert [entry["epoch"] for entry in history] == [0, 1]
    assert main(["validate", "--config", str(DEMO), *tiny, f"--ckpt_path={checkpoint}"]) == 0
    assert main(["predict", "--config", str(DEMO), *tiny, f"--ckpt_path={checkpoint}",
                 "--trainer.callbacks.init_args.score_threshold=0.0"]) == 0
    (predictions,) = run.glob("predict-*/predictions")
    assert len(list(predictions.glob("*.png"))) == 2
    results = json.loads((predictions / "predictions.json").read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert {r["category_id"] for r in results} <= {3, 7, 11, 20}  # COCO ids, as densevision predict writes
