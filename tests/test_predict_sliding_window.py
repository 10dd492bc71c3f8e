"""Prediction tile by tile: ``predict(..., sliding_window=...)`` and ``densevision predict --window-size``
give the whole-image masks of a pointwise model while the model only sees window-sized inputs."""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image
from torch import nn

from densevision.cli import main
from densevision.inference.predict import predict
from tests.models.test_sliding_window import Recording
from tests.test_predict import _expected_mask, images, write_run  # noqa: F401 (images is a fixture)


def test_predict_with_a_sliding_window_calls_the_model_on_windows_only(tmp_path, images):  # noqa: F811
    model = Recording(nn.Conv2d(3, 4, 1).eval())
    files = sorted(images.iterdir())
    predict(model, files, tmp_path / "out", optimize=False, sliding_window={"window_size": (16, 16)},
            log=lambda *_: None)  # fmt: skip
    assert model.shapes and all(shape[-2:] == (16, 16) for shape in model.shapes)
    for file in files:
        mask = np.array(Image.open(tmp_path / "out" / "masks" / f"{file.stem}.png"))
        np.testing.assert_array_equal(mask, _expected_mask(model.model, file))


def test_predict_command_takes_a_window_size(tmp_path, images, capsys):  # noqa: F811
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1).eval()
    init_args = {"in_channels": 3, "out_channels": 4, "kernel_size": 1}
    ckpt = write_run(tmp_path / "run", conv, "torch.nn.Conv2d", init_args)
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--input", str(images), "--output", str(out), "--no-optimize"]
    args += ["--overwrite"]  # the second call writes over the first
    assert main(["predict", *args, "--window-size", "16", "20"]) == 0
    for file in sorted(images.iterdir()):
        mask = np.array(Image.open(out / "masks" / f"{file.stem}.png"))
        np.testing.assert_array_equal(mask, _expected_mask(conv, file))
    # the window reaches sliding_window_inference (whose check refuses this one)
    capsys.readouterr()
    assert main(["predict", *args, "--window-size", "0", "16"]) == 1  # one line, no traceback
    assert re.search(r"window_size must be a positive int .*got \(0, 16\)", capsys.readouterr().err)


class _FlipAveraged(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(x.flip(-1)).flip(-1)) / 2


def test_predict_command_flip_tta_averages_the_mirrored_logits(tmp_path, images, capsys):  # noqa: F811
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).eval()  # not mirror-symmetric: the flip changes the logits
    init_args = {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}
    ckpt = write_run(tmp_path / "run", conv, "torch.nn.Conv2d", init_args)
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--input", str(images), "--output", str(out), "--no-optimize"]
    args += ["--overwrite"]  # the second call writes over the first
    assert main(["predict", *args, "--flip-tta", "--window-size", "64", "64"]) == 0
    changed = 0
    for file in sorted(images.iterdir()):
        mask = np.array(Image.open(out / "masks" / f"{file.stem}.png"))
        np.testing.assert_array_equal(mask, _expected_mask(_FlipAveraged(conv), file))
        changed += int((mask != _expected_mask(conv, file)).sum())
    assert changed > 0
    # a run without a training size needs the window named
    capsys.readouterr()
    assert main(["predict", *args, "--flip-tta"]) == 1  # one line, no traceback
    assert "--flip-tta: this run predicts images at their own size" in capsys.readouterr().err
