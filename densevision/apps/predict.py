"""``densevision predict --checkpoint RUN.ckpt --input IMG_OR_DIR --output OUT`` (also ``densevision infer``):
a trained checkpoint on image files, without a config or a data module.

The model is rebuilt from the checkpoint alone (``densevision.tasks.checkpoints``, ``weights_only=True``),
and images are resized to the run's training size. Writes, per image ``<name>`` (its path under the input
folder, suffix ``.png``: ``a/x.png`` and ``b/x.png`` stay apart; ``x.png`` and ``x.jpg`` side by side
become ``x.png.png`` and ``x.jpg.png``):

- segmentation: ``OUT/masks/<name>`` (class indices, 8-bit single channel) and
  ``OUT/overlays/<name>`` (colour overlay);
- detection: ``OUT/overlays/<name>`` (boxes, class names, scores and instance masks drawn) and, for all
  images, ``OUT/predictions.json`` (COCO results: ``image_id``, ``category_id`` = the training data's COCO
  category id, as Lightning's predict writes it, ``bbox`` [x, y, w, h] in pixels, ``score``, RLE
  ``segmentation`` for masks) with ``OUT/images.json`` (COCO ``images``: id, file_name, height, width).

Unreadable images (truncated, empty, not an image, over PIL's pixel limit) are skipped and listed in one
warning; ``--strict`` stops at the first. The output folder is checked for writing before any work.
``--max-size N`` runs images whose longer side exceeds N pixels downscaled (outputs at the original size).

The model runs through ``densevision.optimize_for_inference`` (BN folded, channels-last, bfloat16
autocast where the CPU has AMX / AVX512-BF16; a detector's backbone only), and the first image is also run
by the original model in eager float32: the agreement (pixels with the same class, or detections matched
at IoU >= 0.5) and both times are printed. ``--no-optimize`` runs the original model alone,
``--bf16`` / ``--no-bf16`` override the automatic choice and ``--compile`` adds ``torch.compile``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densevision.apps.inference_args import add_inference_arguments
from densevision.datasets.image_io import check_writable, find_images
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
    parser.add_argument(
        "--flip-tta", action="store_true",
        help="segmentation: average the logits of each image and its left-right mirror (2x the time)",
    )  # fmt: skip
    parser.add_argument("--max-size", type=int, help="longest image side the model sees (default: as is)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_inference_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_size is not None and args.max_size < 1:
        raise ValueError(f"--max-size must be a positive number of pixels, got {args.max_size}")
    files = find_images(args.input)
    check_writable(args.output)
    task = load_task(args.checkpoint)
    predict(
        task.model,
        files,
        args.output,
        root=args.input if args.input.is_dir() else args.input.parent,
        max_size=args.max_size,
        strict=args.strict,
        progress=args.progress,
        category_ids=getattr(task, "category_ids", None),
        device=args.device,
        optimize=args.optimize,
        bf16=args.bf16,
        compile=args.compile,
        class_names=list(getattr(task, "class_names", None) or []),
        score_threshold=args.score_threshold,
        input_size=getattr(task, "input_size", None),
        sliding_window=_sliding_window(task, args.window_size, args.flip_tta),
    )
    return 0


def _sliding_window(task, window_size: list[int] | None, flip_tta: bool = False) -> dict | None:
    """The run's ``sliding_window`` options, with ``--window-size`` replacing (or adding) the window and
    ``--flip-tta`` turning the mirrored pass on (one window of the run's input size, if none is set)."""
    options = dict(getattr(task, "sliding_window", None) or {})
    if window_size is not None:
        options["window_size"] = tuple(window_size)
    if flip_tta:
        options["flip_tta"] = True
        if "window_size" not in options:
            input_size = getattr(task, "input_size", None)
            if input_size is None:
                raise ValueError(
                    "--flip-tta: this run predicts images at their own size (no input_size in the "
                    "checkpoint); give the window too: --window-size H W"
                )
            options["window_size"] = tuple(input_size)
    return options or None
