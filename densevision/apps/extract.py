"""``densevision extract``: a backbone's multi-scale features (or pooled embeddings) for a folder of images.

  densevision extract --model densenet121 --weights densenet121.pth --input imgs --output f.npz
  densevision extract --checkpoint runs/camvid/checkpoints/best.ckpt --input imgs --output f.npz --pooled
  densevision extract --model fcdensenet56 --weights run_weights.pth --input imgs --output f.npz

The features come from a backbone preset (``--model``, with ``--weights``; without them the network is
randomly initialised, which the command warns about), from a segmentation preset's encoder (``--model
fcdensenet56``...), or from the encoder of a trained run (``--checkpoint``, a ``densevision fit``
checkpoint: its images are normalised as in that run's training).

Output: one ``.npz`` file (``numpy.load(path)`` reads it, no pickle):

- ``<name>`` for each chosen feature (``c2``, ``c5``...): float array ``(N, C, H / stride, W / stride)``,
  or ``(N, C)`` with ``--pooled`` (global average pool);
- ``feature_names``, ``feature_channels``, ``feature_strides``: the backbone's ``feature_info`` for them;
- ``image_files``: ``(N,)`` paths relative to the input folder, in the rows' order;
- ``image_size``: ``(H, W)`` every image was resized to (bilinear, aspect ratio not kept; default 224 x
  224, or the run's input size with ``--checkpoint``), then normalised with ``mean`` and ``std``;
- ``mean``, ``std``: ``(3,)`` the normalisation (ImageNet's, or the run's with ``--checkpoint``);
- ``model``: the model name (or the checkpoint's file and its model's class).

The backbone runs through ``densevision.optimize_for_inference``: with float32 (``--no-bf16``, and the
default on CPUs without AMX / AVX512-BF16) the features match the eager model's to ~1e-5; with bfloat16
autocast (the default where the CPU has AMX / AVX512-BF16) to ~1e-2 of their range. Either way they are
stored as ``--dtype`` (float32 by default). ``--no-optimize`` runs the eager model itself.

Unreadable images (truncated, empty, not an image, over PIL's pixel limit) are skipped, listed in one
warning and left out of the rows (and of ``image_files``); ``--strict`` stops at the first. The output
folder is checked for writing before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from densevision.apps.inference_args import add_inference_arguments
from densevision.datasets.image_io import check_writable, find_images
from densevision.datasets.transforms import MEAN, STD
from densevision.inference.features import build_backbone, extract_features, load_run_encoder, save_features
from densevision.inference.optimize import inference_path
from densevision.log import get_logger

log = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="backbone or segmentation preset (densevision.list_models()); "
                        "default densenet121")  # fmt: skip
    source.add_argument("--checkpoint", type=Path, help="a densevision fit run's .ckpt: its encoder")
    parser.add_argument("--weights", help="local state-dict file for --model (torchvision or densevision)")
    parser.add_argument("--input", required=True, type=Path, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, type=Path, help="output .npz file")
    parser.add_argument("--features", help="comma-separated feature names (default: all the backbone has)")
    parser.add_argument("--pooled", action="store_true", help="global-average-pooled (N, C) embeddings")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="default: 224 224, or the run's input size with --checkpoint")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading images")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored dtype")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_inference_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.weights is not None:
        parser.error("--weights is for --model; a --checkpoint holds its own weights")
    features = [n.strip() for n in args.features.split(",") if n.strip()] if args.features else None
    files = find_images(args.input)
    output = args.output if args.output.suffix == ".npz" else args.output.with_suffix(".npz")
    check_writable(output.parent)
    mean, std, image_size = MEAN, STD, args.image_size
    if args.checkpoint is not None:
        run = load_run_encoder(args.checkpoint, features)
        model, mean, std, name = run.model, run.mean, run.std, run.description
        image_size = image_size or run.input_size
    else:
        name = args.model or "densenet121"
        model = build_backbone(name, features, args.weights)
        if args.weights is None:
            log.warning(
                f"no --weights: the features come from a randomly initialised {name}; give --weights FILE "
                "(e.g. torchvision's densenet121 state dict) or --checkpoint RUN.ckpt for meaningful features"
            )
    image_size = tuple(image_size or (224, 224))
    runner = inference_path(model, optimize=args.optimize, bf16=args.bf16, compile=args.compile)
    kept: list[Path] = []
    result = extract_features(
        runner,
        files,
        image_size=image_size,
        batch_size=args.batch_size,
        pooled=args.pooled,
        num_workers=args.num_workers,
        dtype=getattr(torch, args.dtype),
        progress=args.progress,
        strict=args.strict,
        kept=kept,
        mean=mean,
        std=std,
    )
    save_features(output, result, model, name, kept, args.input, image_size, mean=mean, std=std)
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in result.items())
    skipped = f" ({len(files) - len(kept)} unreadable skipped)" if len(kept) < len(files) else ""
    log.info(f"wrote {output}: {len(kept)} images{skipped}; {shapes}")
    return 0
