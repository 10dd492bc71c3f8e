from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

import densevision
from densevision.cli import _names_a_config, main
from densevision.datasets.image_io import to_tensor
from densevision.datasets.transforms import MEAN, STD, EvaluationTransform
from densevision.inference.predict import coco_results, predict
from densevision.models.segmentation.decoder import resize_logits
from densevision.models.segmentation.tiramisu import FCDenseNet
from tests.bn import randomize_bn_statistics
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint


def write_run(root, model: torch.nn.Module, class_path: str, init_args: dict, **task_args):
    """A segmentation fit run's checkpoint: checkpoints/last.ckpt with the task config in its
    hyper-parameters."""
    hparams = cli_hparams(class_path, init_args, num_classes=init_args["num_classes"], **task_args)
    return write_fit_checkpoint(root / "checkpoints" / "last.ckpt", model, hparams, num_classes=4)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (24, 32)), ("b.jpg", (40, 36))]:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


TINY_SEG = {
    "num_classes": 4,
    "growth_rate": 4,
    "down_blocks": [2, 2],
    "bottleneck_layers": 2,
    "stem_channels": 8,
    "drop_rate": 0.0,
}


def _tiny_segmenter() -> FCDenseNet:
    return randomize_bn_statistics(FCDenseNet(**TINY_SEG)).eval()  # eval and training modes differ


def _expected_mask(model, image_file) -> np.ndarray:
    image = np.array(Image.open(image_file).convert("RGB"))
    with torch.no_grad():
        return model(to_tensor(image, mean=MEAN, std=STD)[None])[0].argmax(0).numpy()


def test_predict_without_config_writes_segmentation_masks(tmp_path, images, capsys):
    seg = _tiny_segmenter()
    ckpt = write_run(tmp_path / "run", seg, "densevision.models.segmentation.tiramisu.FCDenseNet", TINY_SEG)
    for switches in (["--no-bf16"], ["--no-optimize"]):  # the fp32 optimised path and the eager model
        out = tmp_path / switches[0]
        args = ["--checkpoint", str(ckpt), "--input", str(images), "--output", str(out)]
        assert main(["predict", *args, *switches]) == 0
        for name in ("a", "b"):
            image_file = next(images.glob(f"{name}.*"))
            mask = np.array(Image.open(out / "masks" / f"{name}.png"))
            np.testing.assert_array_equal(mask, _expected_mask(seg, image_file))
            assert Image.open(out / "overlays" / f"{name}.png").size == Image.open(image_file).size
        report, optimized = capsys.readouterr().out, switches[0] == "--no-bf16"
        # the optimised path is checked against the eager float32 model on the first image
        assert ("optimized (channels_last + fp32) vs eager fp32 on a.png" in report) == optimized
        assert ("100.00% of pixels get the same class" in report) == optimized


def test_predict_runs_at_the_training_size_and_returns_masks_at_the_image_size(tmp_path, images):
    seg = _tiny_segmenter()
    ckpt = write_run(tmp_path / "run", seg, "densevision.models.segmentation.tiramisu.FCDenseNet", TINY_SEG,
                     input_size=[16, 16])  # fmt: skip
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--input",
                str(images),
                "--output",
                str(out),
                "--no-optimize",
            ]
        )
        == 0
    )
    for name in ("a", "b"):
        image_file = next(images.glob(f"{name}.*"))
        image = np.array(Image.open(image_file).convert("RGB"))
        x = EvaluationTransform((16, 16))(image=image)["image"][None]
        with torch.no_grad():
            expected = resize_logits(seg(x), image.shape[:2])[0].argmax(0).numpy()
        mask = np.array(Image.open(out / "masks" / f"{name}.png"))
        assert mask.shape == image.shape[:2]
        np.testing.assert_array_equal(mask, expected)


def test_predict_bf16_reports_agreement_with_fp32(tmp_path, images, capsys):
    seg = _tiny_segmenter()
    out = predict(seg, [images / "a.png"], tmp_path / "out", bf16=True)
    report = capsys.readouterr().out
    assert "optimized (channels_last + bf16 autocast) vs eager fp32 on a.png" in report
    same = float(report.split("% of pixels")[0].rsplit(" ", 1)[-1])
    assert 50 <= same <= 100
    assert out["kind"] == "dense" and (tmp_path / "out" / "masks" / "a.png").is_file()


def test_predict_rejects_conflicting_switches_and_backbones(tmp_path, images):
    with pytest.raises(ValueError, match="--bf16 and --compile choose how the optimised path runs"):
        predict(_tiny_segmenter(), [images / "a.png"], tmp_path, optimize=False, bf16=True)
    backbone = densevision.create_model("densenet40_k12", features_only=True)
    with pytest.raises(ValueError, match="model is a backbone; use densevision extract"):
        predict(backbone, [images / "a.png"], tmp_path)


def test_predict_dispatch():
    assert _names_a_config(["-c", "x.yaml"]) and _names_a_config(["--config=x.yaml"])
    assert not _names_a_config(["--checkpoint", "last.ckpt"])
    with pytest.raises(SystemExit, match="2"):  # infer's parser: --checkpoint is required
        main(["predict", "--input", "x"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_coco_results():
    masks = torch.zeros(2, 1, 12, 16)
    masks[0, 0, 2:5, 3:9] = 0.9
    detection = {
        "boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 4.0, 4.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),
        "masks": masks,
    }
    records = coco_results(detection, image_id=7, image_size=(12, 16))
    assert [r["bbox"] for r in records] == [[3.0, 2.0, 6.0, 3.0], [0.0, 0.0, 4.0, 4.0]]
    assert [(r["image_id"], r["category_id"]) for r in records] == [(7, 1), (7, 2)]
    rle = dict(records[0]["segmentation"], counts=records[0]["segmentation"]["counts"].encode())
    np.testing.assert_array_equal(coco_mask.decode(rle), (masks[0, 0] > 0.5).numpy())
    json.dumps(records)
    assert coco_results({k: v[:0] for k, v in detection.items()}, image_id=7, image_size=(12, 16)) == []


def _matched(records: list[dict], reference: list[dict], tol: float) -> float:
    """Fraction of ``reference`` COCO records with a record of the same image and category whose score and
    box agree within ``tol`` (the order of near-tied detections may differ)."""

    def close(a, b):
        return (
            (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
            and abs(a["score"] - b["score"]) <= tol
            and np.allclose(a["bbox"], b["bbox"], atol=100 * tol)
        )

    return sum(any(close(r, ref) for r in records) for ref in reference) / max(len(reference), 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_predict_detection_writes_coco_json(tmp_path, images, capsys):
    name = "maskrcnn_densenet_tiny_fpn"
    args = {"num_classes": 3, "min_size": 64, "max_size": 64}
    hparams = cli_hparams(f"densevision.models.detection.densenet_fpn.{name}", args,
                          task="densevision.tasks.detection.DetectionTask")  # fmt: skip
    detector = densevision.create_model(name, **args)
    ckpt = write_fit_checkpoint(tmp_path / "run" / "last.ckpt", detector, hparams, num_classes=3)
    common = ["predict", "--checkpoint", str(ckpt), "--input", str(images)]
    outputs = {}
    for switch in ("--bf16", "--no-bf16", "--no-optimize"):
        out = outputs[switch] = tmp_path / switch
        assert main([*common, "--output", str(out), switch]) == 0
        listed = json.loads((out / "images.json").read_text())
        assert [i["file_name"].rsplit("/", 1)[-1] for i in listed] == ["a.png", "b.jpg"]
        assert (out / "overlays" / "a.png").is_file() and (out / "overlays" / "b.png").is_file()
    report = capsys.readouterr().out
    # a detector gets bf16 in its backbone only; its boxes stay float32 and are checked against eager fp32
    assert "optimized (channels_last + bf16 autocast (backbone)) vs eager fp32 on a.png" in report
    assert "float32 detections (score >= 0.5) matched at IoU >= 0.5" in report
    results = {k: json.loads((out / "predictions.json").read_text()) for k, out in outputs.items()}
    eager = results["--no-optimize"]
    assert eager and {r["image_id"] for r in eager} == {0, 1} and all(r["category_id"] > 0 for r in eager)
    assert all(len(r["bbox"]) == 4 and "segmentation" in r for r in eager)
    # BN folding and channels-last in float32 keep the detections (json rounds scores to 1e-5)
    assert _matched(results["--no-bf16"], eager, tol=1e-4) >= 0.95
