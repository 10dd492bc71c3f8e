"""Pictures a person reads: a legend of class names and colours on every segmentation overlay, detection
captions on a filled background, sized with the image and never covering each other, files named after
the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from densevision.cli import main
from densevision.models.segmentation import FCDenseNet
from densevision.tasks.detection import DetectionTask
from densevision.tasks.detection_writer import DetectionPredictionWriter
from densevision.visualize import (
    DETECTION_COLORS,
    default_palette,
    draw_captions,
    draw_detections,
    labelled_overlay,
    overlay,
)
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint
from tests.tasks.test_detection import _datamodule, _trainer, tiny_fcos

NAMES = ["road", "sky", "car"]


def _legend_region(picture: np.ndarray, plain: np.ndarray) -> tuple[int, int]:
    """(height, width) of the top-left block where ``picture`` differs from the plain overlay."""
    rows = np.flatnonzero((picture != plain).any(axis=(1, 2)))
    cols = np.flatnonzero((picture != plain).any(axis=(0, 2)))
    return int(rows.max()) + 1, int(cols.max()) + 1


def test_overlay_legend_lists_the_classes_present_with_their_colours():
    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    mask = np.zeros((120, 160), dtype=np.int64)
    mask[:, 80:] = 2  # road and car; no sky
    colors = default_palette(3)
    picture = labelled_overlay(image, mask, NAMES, colors)
    plain = overlay(image, mask, colors)
    assert picture.shape == image.shape and picture.dtype == np.uint8  # masks and overlays stay aligned
    height, width = _legend_region(picture, plain)
    assert 0 < height < 60 and 0 < width < 120
    np.testing.assert_array_equal(picture[height:], plain[height:])  # the rest is the overlay
    legend = {tuple(p) for p in picture[:height, :width].reshape(-1, 3)}
    assert tuple(colors[0]) in legend and tuple(colors[2]) in legend  # a swatch per class present
    assert tuple(colors[1]) not in legend  # the absent class is not listed
    # two rows: one class more makes the legend taller
    mask[:60, :40] = 1
    taller, _ = _legend_region(labelled_overlay(image, mask, NAMES, colors), overlay(image, mask, colors))
    assert taller > height


def test_overlay_legend_grows_with_the_image():
    colors = default_palette(3)
    sizes = []
    for side in (200, 800):
        image = np.zeros((side, side, 3), dtype=np.uint8)
        mask = np.zeros((side, side), dtype=np.int64)
        plain = overlay(image, mask, colors)
        sizes.append(_legend_region(labelled_overlay(image, mask, None, colors), plain))
    assert sizes[1][0] > 2 * sizes[0][0]  # text 3.5 % of the shorter side (at least 10 px)


def test_captions_are_filled_sized_with_the_image_and_never_overlap():
    picture = Image.new("RGB", (400, 300))
    boxes = [[50.0, 60, 150, 160], [52, 62, 150, 160], [55, 58, 140, 150], [300, 0, 399, 100]]
    colors = [DETECTION_COLORS[i] for i in (1, 1, 2, 3)]
    rects = draw_captions(picture, boxes, ["cross 0.93", "cross 0.91", "circle 0.60", "square 0.50"], colors)
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    pixels = np.asarray(picture)
    x1, y1, x2, y2 = rects[0]
    assert y2 <= 60 and x1 == 50  # above its box, at its left edge
    patch = pixels[y1:y2, x1:x2].reshape(-1, 3)
    filled = (patch == DETECTION_COLORS[1]).all(axis=1).mean()
    assert 0.5 < filled < 1  # a background of the box's colour, with text on it
    assert rects[3][1] == 0 and rects[3][2] <= 400  # at the top edge: inside the box, within the picture
    big = draw_captions(Image.new("RGB", (1600, 1200)), [[50.0, 60, 150, 160]], ["cross 0.93"], colors[:1])
    assert big[0][3] - big[0][1] > 2 * (y2 - y1)


def test_ground_truth_captions_name_the_class_without_a_score():
    image = torch.zeros(3, 200, 200, dtype=torch.uint8)
    found = {"boxes": torch.tensor([[60.0, 60, 120, 120]]), "labels": torch.tensor([1]),
             "scores": torch.tensor([1.0])}  # fmt: skip
    named = draw_detections(image, found, ["bg", "cross"], score_threshold=0, show_scores=False)
    scored = draw_detections(image, found, ["bg", "cross"], score_threshold=0)
    caption_width = [int((p[:, 40:60].sum(0) > 0).any(0).sum()) for p in (named, scored)]
    assert 0 < caption_width[0] < caption_width[1]


def test_predict_overlays_carry_the_runs_class_names(tmp_path):
    args = {"num_classes": 3, "growth_rate": 4, "down_blocks": [1, 1], "bottleneck_layers": 1,
            "stem_channels": 8}  # fmt: skip
    hparams = cli_hparams("densevision.models.segmentation.FCDenseNet", args, num_classes=3,
                          class_names=NAMES)  # fmt: skip
    ckpt = write_fit_checkpoint(tmp_path / "run" / "last.ckpt", FCDenseNet(**args), hparams, num_classes=3)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    image_file = tmp_path / "images" / "street.png"
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image_file)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "images"), "--output",
                 str(out), "--no-optimize", "--no-progress"]) == 0  # fmt: skip
    picture = np.asarray(Image.open(out / "overlays" / "street.png").convert("RGB"))
    mask = np.asarray(Image.open(out / "masks" / "street.png"))
    image = np.asarray(Image.open(tmp_path / "images" / "street.png").convert("RGB"))
    plain = overlay(image, mask, default_palette(3))
    height, width = _legend_region(picture, plain)
    assert 0 < height < 96 and 0 < width < 128
    np.testing.assert_array_equal(picture, labelled_overlay(image, mask, NAMES, default_palette(3)))


def test_detection_pictures_are_named_after_the_image_files(tmp_path):
    dm = _datamodule(tmp_path / "shapes")
    writer = DetectionPredictionWriter(output_dir=str(tmp_path / "pred"), score_threshold=0.0, max_pictures=2)
    _trainer(tmp_path, callbacks=[writer]).predict(DetectionTask(tiny_fcos()), datamodule=dm,
                                                  return_predictions=False)  # fmt: skip
    ids = dm.val_dataset.ids
    stems = {Path(dm.val_dataset.coco.imgs[i]["file_name"]).stem for i in ids}
    pictures = sorted(p.name for p in (tmp_path / "pred").glob("*.png"))
    assert len(pictures) == 2 and {Path(p).stem for p in pictures} <= stems, (pictures, stems)
    assert not {f"{i}.png" for i in ids} & set(pictures)  # not the COCO image ids
