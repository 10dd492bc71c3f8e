"""``densevision predict --checkpoint RUN.ckpt --input IMG_OR_DIR --output OUT`` (also ``densevision infer``):
a trained checkpoint on image files, without a config or a data module.

The model is rebuilt from the checkpoint alone (``densevision.tasks.checkpoints``,
``weights_only=True``), and images are resized to the run's training size. Writes, per image ``<stem>``:

- segmentation: ``OUT/masks/<stem>.png`` (class indices, 8-bit single channel) and
  ``OUT/overlays/<stem>.png`` (colour overlay);
- detection: ``OUT/overlays/<stem>.png`` (boxes, labels, scores and instance masks drawn) and, for all
  images, ``OUT/predictions.json`` (COCO results: ``image_id``, ``category_id`` = the model's label,
  ``bbox`` [x, y, w, h] in pixels, ``score``, RLE ``segmentation`` for masks) with
  ``OUT/images.json`` (COCO ``images``: id, file_name, height, width).

The model runs through ``densevision.optimize_for_inference`` (BN folded, channels-last, bfloat16
autocast where the CPU has AMX / AVX512-BF16; a detector's backbone only), and the first image is also run
by the original model in eager float32: the agreement (pixels with the same class, or detections matched
at IoU >= 0.5) and both times are printed. ``--no-optimize`` runs the original model alone,
``--bf16`` / ``--no-bf16`` override the automatic choice and ``--compile`` adds ``torch.compile``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densevision.datasets.image_io import find_images
from densevision.inference.optimize import add_inference_arguments
from densevision.inference.predict import predict
from densevision.tasks.checkpoints import load_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision predict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + "\nWith --config / -c, `densevision predict` is Lightning's predict instead "
        "(its options: densevision predict -c CONFIG --help).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a densevision fit run's .ckpt")
    parser.add_argument("--input", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="detections drawn (json keeps all)"
    )
    parser.add_argument(
        "--window-size", type=int, nargs=2, metavar=("H", "W"),
        help="segmentation: predict tile by tile in windows of H x W (default: the run's sliding_window, "
        "else whole images)",
    )  # fmt: skip
    add_inference_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    task = load_task(args.checkpoint)
    predict(
        task.model,
        find_images(args.input),
        args.output,
        device=args.device,
        optimize=args.optimize,
        bf16=args.bf16,
        compile=args.compile,
        class_names=list(getattr(task, "class_names", None) or []),
        score_threshold=args.score_threshold,
        input_size=getattr(task, "input_size", None),
        sliding_window=_sliding_window(task, args.window_size),
    )
    return 0


def _sliding_window(task, window_size: list[int] | None) -> dict | None:
    """The run's ``sliding_window`` options, with ``--window-size`` replacing (or adding) the window."""
    options = getattr(task, "sliding_window", None)
    if window_size is None:
        return options
    return {**(options or {}), "window_size": tuple(window_size)}
