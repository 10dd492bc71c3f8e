"""``densevision export``: ONNX and TorchScript files of a model, each verified against PyTorch.

What each kind of model exports and how files are verified: ``densevision.inference.export``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from densevision.inference.export import export_model
from densevision.models import create_model
from densevision.tasks.checkpoints import load_model_checkpoint, load_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model name; omit to rebuild the model of --checkpoint's run")
    parser.add_argument("--checkpoint", type=Path, help="trained weights: a fit run's .ckpt or a state dict")
    parser.add_argument("--num-classes", type=int, help="classes of --model (default: the preset's)")
    parser.add_argument("--features-only", action="store_true", help="export a backbone's feature maps")
    parser.add_argument("--format", choices=("onnx", "torchscript", "both"), default="both")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=1, help="export sample batch (not detectors)")
    parser.add_argument("--dynamic", action="store_true", help="free batch and image size where possible")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 11 for detectors)")
    return parser


def load_export_model(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The model named by ``--model`` (with ``--checkpoint``'s weights) or the one ``--checkpoint`` ran."""
    if args.model is None:
        if args.checkpoint is None:
            raise ValueError("give --model NAME, or --checkpoint of a densevision fit run")
        # files named after the run folder (<run>/checkpoints/best.ckpt -> <run>)
        folder = args.checkpoint.resolve().parent
        name = folder.parent.name if folder.name == "checkpoints" else args.checkpoint.stem
        return load_task(args.checkpoint).model, name
    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if args.features_only:
        options["features_only"] = True
    model = create_model(args.model, **options)
    if args.checkpoint is not None:
        load_model_checkpoint(model, args.checkpoint, model_name=args.model, num_classes=args.num_classes)
    return model, args.model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model, name = load_export_model(args)
    formats = ("onnx", "torchscript") if args.format == "both" else (args.format,)
    results = export_model(
        model,
        args.output,
        name=name,
        formats=formats,
        input_size=args.input_size,
        batch_size=args.batch_size,
        dynamic=args.dynamic,
        opset=args.opset,
    )
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)}/{len(results)} verifications within tolerance")
    return 1 if failed else 0
