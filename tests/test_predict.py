from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

import densevision
from densevision.cli import _names_a_config, main
from densevision.datasets.image_io import ImageFileError, read_rgb_image, resize_image, to_tensor
from densevision.datasets.transforms import MEAN, STD, EvaluationTransform
from densevision.inference.predict import coco_results, predict
from densevision.models.segmentation.decoder import resize_logits
from densevision.models.segmentation.tiramisu import FCDenseNet
from tests.bad_files import write_bad_images
from tests.bn import randomize_bn_statistics
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint


def write_run(
    root, model: torch.nn.Module, class_path: str, init_args: dict, num_classes: int = 4, **task_args
):
    """A segmentation fit run's checkpoint: checkpoints/last.ckpt with the task config in its
    hyper-parameters."""
    hparams = cli_hparams(class_path, init_args, num_classes=num_classes, **task_args)
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


def test_predict_bf16_reports_agreement_with_fp32(tmp_path, images, caplog):
    seg = _tiny_segmenter()
    with caplog.at_level(logging.INFO, logger="densevision"):
        out = predict(seg, [images / "a.png"], tmp_path / "out", bf16=True)
    report = caplog.text
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
@pytest.mark.slow
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


SEG_CLASS = "densevision.models.segmentation.tiramisu.FCDenseNet"


def _write_image(path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def test_predict_skips_unreadable_images_and_keeps_relative_names(tmp_path, caplog, capsys):
    ckpt = write_run(tmp_path / "run", _tiny_segmenter(), SEG_CLASS, TINY_SEG)
    inputs = tmp_path / "in"
    for seed, name in enumerate(("a/x.png", "b/x.png", "x.png", "x.jpg")):
        _write_image(inputs / name, (24, 32), seed)
    write_bad_images(inputs / "bad")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(ckpt), "--input", str(inputs), "--no-optimize", "--no-progress"]
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert main([*args, "--output", str(out)]) == 0
    masks = sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png"))
    # the same stem in two folders, and two suffixes of one stem, all kept apart
    assert masks == ["a/x.png", "b/x.png", "x.jpg.png", "x.png.png"]
    assert len(list((out / "overlays").rglob("*.png"))) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 of 8 unreadable image(s)" in warnings[0]
    for name, reason in [
        ("bomb.png", "too large"),
        ("empty.png", "cannot be read"),
        ("text.png", "cannot be read"),
        ("truncated.png", "cannot be read"),
    ]:
        assert f"{name}: {reason}" in warnings[0]
    assert "wrote 4 image(s)" in caplog.text

    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "bad/bomb.png: too large" in err and "Traceback" not in err  # one sentence, the first bad file
    with pytest.raises(ImageFileError, match="bomb.png: too large"):  # --debug: the exception itself
        main(["--debug", *args, "--output", str(tmp_path / "debug"), "--strict"])


def test_predict_checks_the_output_folder_before_any_work(tmp_path, images, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # the checkpoint does not exist: the output folder is refused before it is even read
    args = ["predict", "--checkpoint", str(tmp_path / "missing.ckpt"), "--input", str(images)]
    assert main([*args, "--output", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert f"output folder {blocker / 'out'} is not writable" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_refuses_a_read_only_output_folder(tmp_path, images, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    try:
        args = ["predict", "--checkpoint", str(tmp_path / "missing.ckpt"), "--input", str(images)]
        assert main([*args, "--output", str(out)]) == 1
        assert f"output folder {out}" in capsys.readouterr().err
    finally:
        out.chmod(0o700)


def test_predict_max_size_bounds_what_the_model_sees(tmp_path):
    seg = _tiny_segmenter()
    ckpt = write_run(tmp_path / "run", seg, SEG_CLASS, TINY_SEG)
    _write_image(tmp_path / "in" / "big.png", (48, 64))
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(out),
                "--no-optimize",
                "--max-size",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    mask = np.array(Image.open(out / "masks" / "big.png"))
    assert mask.shape == (48, 64)  # given back at the original size
    small = resize_image(read_rgb_image(tmp_path / "in" / "big.png"), (24, 32))
    with torch.no_grad():
        expected = seg(to_tensor(small, mean=MEAN, std=STD)[None])[0].argmax(0).numpy().astype(np.uint8)
    expected = np.array(Image.fromarray(expected).resize((64, 48), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(mask, expected)
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(out),
                "--max-size",
                "0",
            ]
        )
        == 1
    )


def test_coco_results_use_the_training_category_ids():
    detection = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.2]),
    }
    records = coco_results(detection, image_id=3, image_size=(8, 8), category_ids=[0, 7, 11])
    assert [r["category_id"] for r in records] == [7, 11]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_predict_tool_writes_the_category_ids_and_names_of_the_run(tmp_path, images):
    from densevision.tasks.checkpoints import load_task

    name = "maskrcnn_densenet_tiny_fpn"  # untrained, it still finds boxes above its score threshold
    args = {"num_classes": 3, "min_size": 64, "max_size": 64}
    hyper = {"class_names": ["__background__", "cat", "dog"], "category_ids": [0, 17, 18]}
    hparams = cli_hparams(f"densevision.models.detection.densenet_fpn.{name}", args,
                          task="densevision.tasks.detection.DetectionTask", **hyper)  # fmt: skip
    detector = densevision.create_model(name, **args)
    ckpt = write_fit_checkpoint(tmp_path / "run" / "last.ckpt", detector, hparams, num_classes=3)
    task = load_task(ckpt)
    assert task.class_names == hyper["class_names"] and task.category_ids == [0, 17, 18]
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
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= {17, 18}
