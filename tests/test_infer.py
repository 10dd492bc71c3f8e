from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as coco_mask

import densevision
from densevision.cli import _names_a_config, main
from densevision.images import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from densevision.infer import coco_results, detection_overlay
from densevision.tasks.base import BaseTask


def write_run(root, model: torch.nn.Module, class_path: str, init_args: dict):
    """A fit run's folder: checkpoints/last.ckpt (Lightning layout) and config.yaml."""
    (root / "checkpoints").mkdir(parents=True)
    ckpt = root / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": BaseTask(model).state_dict(), "hyper_parameters": {}}, ckpt)
    config = {"model": {"class_path": "densevision.tasks.base.BaseTask",
                        "init_args": {"model": {"class_path": class_path, "init_args": init_args}}}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return ckpt


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (24, 32)), ("b.jpg", (40, 36))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_predict_without_config_writes_segmentation_masks(tmp_path, images, capsys):
    seg = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)  # a 4-class "segmentation model"
    args = {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}
    ckpt = write_run(tmp_path / "run", seg, "torch.nn.Conv2d", args)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(out)]) == 0
    for name in ("a", "b"):
        image = np.array(Image.open(next(images.glob(f"{name}.*"))).convert("RGB"))
        mask = np.array(Image.open(out / "masks" / f"{name}.png"))
        with torch.no_grad():
            expected = seg(to_tensor(image, mean=IMAGENET_MEAN, std=IMAGENET_STD)[None])[0].argmax(0)
        np.testing.assert_array_equal(mask, expected.numpy())
        assert Image.open(out / "overlays" / f"{name}.png").size == image.shape[1::-1]
    # fast paths are checked against float32 and the agreement printed
    main(["infer", "--checkpoint", str(ckpt), "--input", str(images / "a.png"), "--output", str(out),
          "--channels-last", "--bf16"])
    report = capsys.readouterr().out
    assert "cpu+channels_last+bf16 autocast vs cpu+fp32 on a.png" in report
    assert "of pixels get the same class" in report


def test_predict_dispatch():
    assert _names_a_config(["-c", "x.yaml"]) and _names_a_config(["--config=x.yaml"])
    assert not _names_a_config(["--checkpoint", "last.ckpt"])
    with pytest.raises(SystemExit, match="2"):  # infer's parser: --checkpoint is required
        main(["predict", "--input", "x"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_coco_results_and_overlay():
    masks = torch.zeros(2, 1, 12, 16)
    masks[0, 0, 2:5, 3:9] = 0.9
    detection = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 4.0, 4.0]]),
                 "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.2]), "masks": masks}
    records = coco_results(detection, image_id=7)
    assert [r["bbox"] for r in records] == [[3.0, 2.0, 6.0, 3.0], [0.0, 0.0, 4.0, 4.0]]
    assert [(r["image_id"], r["category_id"]) for r in records] == [(7, 1), (7, 2)]
    rle = dict(records[0]["segmentation"], counts=records[0]["segmentation"]["counts"].encode())
    np.testing.assert_array_equal(coco_mask.decode(rle), (masks[0, 0] > 0.5).numpy())
    json.dumps(records)
    image = np.zeros((12, 16, 3), dtype=np.uint8)
    drawn = detection_overlay(image, detection, ["bg", "square", "dot"], score_threshold=0.5)
    assert drawn.shape == image.shape and drawn[2:5, 4:8].any()  # mask filled inside the kept box
    assert not drawn[8:, :3].any()  # the low-score detection is not drawn


def test_predict_detection_writes_coco_json(tmp_path, images):
    name = "fasterrcnn_densenet_tiny_fpn"
    if name not in densevision.list_models():
        pytest.skip(f"{name} is not registered in this tree")
    args = {"num_classes": 3, "min_size": 64, "max_size": 64}
    ckpt = write_run(tmp_path / "run", densevision.create_model(name, **args),
                     f"densevision.models.detection.densenet_fpn.{name}", args)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(out)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    listed = json.loads((out / "images.json").read_text())
    assert [i["file_name"].rsplit("/", 1)[-1] for i in listed] == ["a.png", "b.jpg"]
    assert {r["image_id"] for r in results} <= {0, 1} and all(len(r["bbox"]) == 4 for r in results)
    assert (out / "overlays" / "a.png").is_file() and (out / "overlays" / "b.png").is_file()
