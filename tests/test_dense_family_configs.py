"""The FC-HarDNet and RDNet configs train: ``fast_dev_run`` through the CLI on a tiny CamVid-shaped
dataset (one train and one val batch), the detection config for RDNet-T FCOS on generated shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densevision.cli import main
from densevision.datasets.shapes_detection import ensure_shapes_detection_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def camvid_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CamVid's layout and label space (0..10, void 11) in 64x96 images (FC-HarDNet's stride is 64)."""
    root = tmp_path_factory.mktemp("camvid64")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            mask = rng.integers(0, 12, (64, 96), dtype=np.uint8)
            Image.fromarray(mask).save(root / f"{split}annot" / f"{i}.png")
    return root


def test_fchardnet_cpu_budget_config_fast_dev_run(camvid_64: Path, tmp_path: Path) -> None:
    main(["fit", "--config", str(CONFIGS / "segmentation" / "camvid_cpu_budget_fchardnet70.yaml"),
          f"--data.init_args.root={camvid_64}", "--data.init_args.resize=null",
          "--data.init_args.crop_size=[64, 64]", "--data.init_args.batch_size=2",
          "--data.init_args.class_weighting=none", "--trainer.fast_dev_run=true",
          f"--trainer.default_root_dir={tmp_path}", *QUIET])


def test_fcos_rdnet_tiny_config_fast_dev_run(tmp_path: Path) -> None:
    root = ensure_shapes_detection_dataset(tmp_path / "data", num_train=2, num_val=1, image_size=64)
    main(["fit", "--config", str(CONFIGS / "detection" / "coco128_fcos_rdnet_tiny.yaml"),
          f"--data.init_args.train_images={root / 'images'}",
          f"--data.init_args.train_annotations={root / 'annotations/train.json'}",
          f"--data.init_args.val_images={root / 'images'}",
          f"--data.init_args.val_annotations={root / 'annotations/val.json'}",
          "--model.init_args.model.init_args.min_size=64", "--model.init_args.model.init_args.max_size=64",
          "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}", *QUIET])
