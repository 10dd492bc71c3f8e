"""Where ``densevision extract`` takes its features from: a backbone preset (with a warning when it has no
weights), a segmentation preset's encoder, or a trained run's encoder with the run's normalisation."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from densevision.cli import main
from densevision.datasets.image_io import read_rgb_image, to_tensor
from densevision.datasets.transforms import MEAN, STD
from densevision.inference.features import build_backbone, load_run_encoder
from densevision.models.segmentation import FCDenseNet
from densevision.tasks.segmentation import SegmentationTask
from tests.bn import randomize_bn_statistics
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint

FCDENSENET = "densevision.models.segmentation.FCDenseNet"
TINY_FCDENSENET = {"growth_rate": 4, "down_blocks": [1, 1], "bottleneck_layers": 1, "stem_channels": 8,
                   "num_classes": 3}  # fmt: skip
# Runs record their normalisation once the task takes mean / std; older runs fall back to ImageNet's.
TASK_SAVES_NORMALISATION = "mean" in inspect.signature(SegmentationTask.__init__).parameters
RUN_MEAN, RUN_STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_no_weights_warns_once_that_the_network_is_random(images, tmp_path, caplog):
    args = ["extract", "--model", "densenet40_k12", "--input", str(images), "--image-size", "16", "16",
            "--no-progress", "--no-optimize"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert main([*args, "--output", str(tmp_path / "random.npz")]) == 0
    random = [w for w in _warnings(caplog) if "randomly initialised" in w]
    assert len(random) == 1 and "densenet40_k12" in random[0] and "--weights" in random[0]

    weights = tmp_path / "w.pth"
    torch.save(build_backbone("densenet40_k12", None).state_dict(), weights)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert main([*args, "--weights", str(weights), "--output", str(tmp_path / "trained.npz")]) == 0
    assert not [w for w in _warnings(caplog) if "randomly initialised" in w]


def test_a_segmentation_preset_gives_its_encoders_features():
    encoder = build_backbone("fcdensenet56", ["c2", "c5"])
    assert [s.name for s in encoder.feature_info] == ["c2", "c5"]
    out = encoder(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[1:] for k, v in out.items()} == {"c2": (192, 16, 16), "c5": (336, 2, 2)}


def test_a_model_without_an_encoder_names_the_backbones(images, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"\(RetinaNet\) has no encoder .* densenet121, "):
        build_backbone("retinanet_densenet_tiny_fpn", None)
    command = ["extract", "--model", "fasterrcnn_densenet_tiny_fpn", "--input", str(images), "--output",
               str(tmp_path / "x.npz")]  # fmt: skip
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "has no encoder" in err and "vovnet39" in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def _run_checkpoint(tmp_path) -> tuple:
    model = FCDenseNet(**TINY_FCDENSENET)
    randomize_bn_statistics(model)  # trained-looking statistics: features that differ from a fresh model's
    normalisation = {"mean": list(RUN_MEAN), "std": list(RUN_STD)} if TASK_SAVES_NORMALISATION else {}
    hparams = cli_hparams(FCDENSENET, TINY_FCDENSENET, num_classes=3, input_size=[16, 24], **normalisation)
    ckpt = write_fit_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", model, hparams, num_classes=3)
    mean, std = (RUN_MEAN, RUN_STD) if TASK_SAVES_NORMALISATION else (MEAN, STD)
    return ckpt, model.eval(), mean, std


def test_checkpoint_features_are_the_trained_encoders_with_the_runs_normalisation(images, tmp_path, caplog):
    ckpt, model, mean, std = _run_checkpoint(tmp_path)
    run = load_run_encoder(ckpt, ["c1", "c2"])
    assert run.input_size == (16, 24) and run.mean == pytest.approx(mean) and run.std == pytest.approx(std)
    out = tmp_path / "f.npz"
    with caplog.at_level(logging.INFO, logger="densevision"):
        assert main(["extract", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(out),
                     "--features", "c1,c2", "--no-optimize", "--no-progress"]) == 0  # fmt: skip
    assert not [w for w in _warnings(caplog) if "randomly initialised" in w]  # trained weights: no warning
    data = np.load(out)
    assert list(data["feature_names"]) == ["c1", "c2"] and tuple(data["image_size"]) == (16, 24)
    np.testing.assert_allclose(data["mean"], mean)
    np.testing.assert_allclose(data["std"], std)
    assert "FCDenseNet encoder" in str(data["model"])
    # the rows are the trained encoder's features of each image, normalised as in the run's training
    x = torch.stack([to_tensor(read_rgb_image(images / n), (16, 24), mean, std) for n in ("a.png", "b.png")])
    with torch.no_grad():
        expected = model.encoder(x)
    for name in ("c1", "c2"):
        np.testing.assert_allclose(data[name], expected[name].numpy(), rtol=1e-4, atol=1e-5)


def test_checkpoint_and_model_or_weights_together_are_usage_errors(images, tmp_path, capsys):
    ckpt, *_ = _run_checkpoint(tmp_path)
    base = ["extract", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(tmp_path / "x.npz")]
    for extra, message in ((["--model", "densenet121"], "not allowed with argument"),
                           (["--weights", "w.pth"], "--weights is for --model")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main([*base, *extra])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
