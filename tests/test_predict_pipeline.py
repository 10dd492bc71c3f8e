"""``densevision predict``'s pipeline: the pieces made faster give the same numbers and pixels as the plain
formulas, the pipelined OpenVINO backend may be called from several threads, and ``predict --model`` on an
OpenVINO folder starts without Lightning, torchvision or albumentations."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from densevision.inference.model_folder import write_metadata
from densevision.inference.predict import predict
from densevision.inference.preprocessing import Preprocessing
from densevision.models.segmentation.base import resize_logits
from densevision.models.segmentation.tiramisu import FCDenseNet
from densevision.visualize import (
    _classes_present,
    _font,
    default_palette,
    draw_legend,
    labelled_overlay,
    overlay,
)

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["sky", "road", "car", "tree", "person"]


@pytest.mark.parametrize("size", [(24, 32), (37, 53), (8, 10), (16, 16)])
def test_postprocess_is_the_tasks_logit_resize(size):
    logits = torch.randn(1, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Preprocessing.postprocess(logits, size), resize_logits(logits, size),
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_classes_present_are_those_of_a_sorted_unique(dtype):
    rng = np.random.default_rng(0)
    for low in ([0, -1] if dtype == np.int64 else [0]):
        mask = rng.integers(low, 9, (20, 30)).astype(dtype)
        expected = [int(c) for c in np.unique(mask) if 0 <= c < 6]
        assert _classes_present(mask, 6) == expected
    assert _classes_present(np.zeros((0, 0), dtype=np.uint8), 4) == []


def _legend_over_the_whole_picture(picture: Image.Image, names, colors, classes) -> Image.Image:
    """The legend as first drawn: a layer of the picture's size composited over all of it."""
    size = max(10, round(min(picture.size) * 0.035))
    font, pad = _font(size), max(2, size // 4)
    row = size + pad
    text_width = max(ImageDraw.Draw(picture).textlength(names[c], font=font) for c in classes)
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    box = (0, 0, int(pad * 3 + size + text_width), pad + row * len(classes))
    draw.rectangle(box, fill=(255, 255, 255, 215))
    for i, c in enumerate(classes):
        y = pad + i * row
        draw.rectangle((pad, y, pad + size, y + size), fill=(*colors[c], 255), outline=(0, 0, 0, 255))
        draw.text((2 * pad + size, y + size / 2), names[c], fill=(0, 0, 0, 255), font=font, anchor="lm")
    return Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")


@pytest.mark.parametrize("shape", [(360, 480), (40, 36), (300, 90)])
def test_labelled_overlay_is_the_blend_with_the_legend_composited_over_the_whole_picture(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, shape).astype(np.uint8)
    colors = default_palette(len(CLASS_NAMES))
    blended = image.astype(np.float32) * 0.45 + np.asarray(colors, np.float32)[mask] * 0.55
    np.testing.assert_array_equal(overlay(image, mask, colors), blended.round().astype(np.uint8))
    plain = Image.fromarray(overlay(image, mask, colors))
    expected = _legend_over_the_whole_picture(plain, CLASS_NAMES, colors, [0, 1, 2, 3])
    for _ in range(2):  # the second call draws from the cached legend
        picture = labelled_overlay(image, mask, CLASS_NAMES, colors)
        np.testing.assert_array_equal(picture, np.asarray(expected))
    assert (picture != overlay(image, mask, colors)).any()  # a legend was drawn
    other = draw_legend(Image.fromarray(overlay(image, mask, colors)), CLASS_NAMES, colors, [4])
    assert not np.array_equal(np.asarray(other), picture)  # another set of classes, another legend


@pytest.fixture(scope="module")
def openvino_folder(tmp_path_factory) -> Path:
    """A tiny FC-DenseNet as a --format openvino folder (32x48 input, 5 classes, a palette)."""
    ov = pytest.importorskip("openvino", reason="the deploy extra (openvino) is not installed")
    torch.manual_seed(0)
    model = FCDenseNet(num_classes=5, growth_rate=4, down_blocks=(1, 1), bottleneck_layers=1, stem_channels=8,
                       drop_rate=0.0).eval()  # fmt: skip
    folder = tmp_path_factory.mktemp("ov")
    converted = ov.convert_model(model, example_input=torch.zeros(1, 3, 32, 48))
    ov.save_model(converted, folder / "model.xml", compress_to_fp16=False)
    write_metadata(folder, {
        "format": "openvino", "task": "segmentation", "class_names": CLASS_NAMES,
        "palette": [list(c) for c in default_palette(5)], "input_shape": [1, 3, 32, 48],
        "preprocessing": {"input_size": [32, 48]},
    })  # fmt: skip
    return folder


def test_pipelined_openvino_backend_runs_from_several_threads(openvino_folder):
    from densevision.inference.backends import load_backend

    single = load_backend(openvino_folder, "openvino", precision="fp32")
    pipelined = load_backend(openvino_folder, "openvino", precision="fp32", pipelined=True)
    assert single.parallel_calls == 1 and pipelined.parallel_calls >= 1
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 32, 48), dtype=np.float32) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        outputs = list(pool.map(pipelined, inputs))
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(out, single(x), atol=1e-5, rtol=1e-5)


def test_predict_model_on_openvino_starts_without_lightning_and_writes_the_library_masks(
    openvino_folder, tmp_path
):
    from densevision.inference.backends import load_backend

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(2)
    for i, size in enumerate([(60, 80), (45, 70), (60, 80)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(frames / f"{i}.png")
    out = tmp_path / "cli"
    argv = ["predict", "--model", str(openvino_folder), "--backend", "openvino", "--no-bf16", "--input",
            str(frames), "--output", str(out), "--no-progress"]  # fmt: skip
    code = (f"import sys; from densevision.cli import main; code = main({argv!r}); "
            "print(sorted(m for m in ('lightning', 'torchvision', 'albumentations') if m in sys.modules)); "
            "sys.exit(code)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    library = tmp_path / "library"
    run = load_backend(openvino_folder, "openvino", precision="fp32")
    predict(run, sorted(frames.glob("*.png")), library, progress=False, class_names=CLASS_NAMES,
            preprocessing=Preprocessing(input_size=(32, 48)), palette=default_palette(5))  # fmt: skip
    for i in range(3):
        for folder in ("masks", "overlays"):
            np.testing.assert_array_equal(np.asarray(Image.open(out / folder / f"{i}.png")),
                                          np.asarray(Image.open(library / folder / f"{i}.png")))  # fmt: skip
