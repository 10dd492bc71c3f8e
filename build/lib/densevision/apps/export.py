"""``densevision export``: ONNX and TorchScript files of a model, each verified against PyTorch.

Kinds of model and what their exports take and return:

- backbone (``--features-only``): image ``(N, 3, H, W)`` -> one output per feature, named ``c1``..``c5``
  (or the stride-1 ``c0`` ... of CIFAR / FC-DenseNet stems), in high-to-low resolution order;
- segmentation model or classifier: image ``(N, 3, H, W)`` -> ``logits`` ``(N, C, H, W)`` or ``(N, C)``;
- detector (torchvision Faster / Mask R-CNN, RetinaNet, FCOS): one image ``(3, H, W)`` in [0, 1] ->
  ``boxes`` ``(K, 4)``, ``labels`` ``(K,)``, ``scores`` ``(K,)`` [, ``masks`` ``(K, 1, H, W)``]; the batch
  is one image (torchvision's ONNX support is per image).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``, opset 17 by default, >= 11 for detectors):
it handles torchvision detectors and dynamic axes, and exported a tiny DenseNet in 2.7 s where the dynamo
exporter took 48 s (same model, same run, this project's 2-core CPU).

TorchScript uses ``torch.jit.trace`` (the backbone's forward picks its stages with Python-level control
flow, which tracing unrolls), except for detectors, which are first tried with ``torch.jit.script``; when
scripting fails the reason is printed and they are traced instead.

Verification: each file is loaded (onnxruntime / ``torch.jit.load``) and run on the export sample and,
with ``--dynamic``, on a second batch and image size; every output must satisfy
``max|exported - pytorch| <= atol + rtol * max|pytorch|`` with ``atol = 1e-4``, ``rtol = 1e-3`` (float32).
Detections must also agree in number.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from densevision.inference.export import export_model
from densevision.models import create_model
from densevision.tasks.checkpoints import find_run_config, load_model_checkpoint, load_task


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
        run_config = find_run_config(args.checkpoint)  # name the files after the run folder
        name = run_config.parent.name if run_config else args.checkpoint.stem
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
