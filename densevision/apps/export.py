"""``densevision export``: a trained run as a self-describing model folder, verified against PyTorch.

``densevision export --checkpoint RUN.ckpt --format onnx|openvino|safetensors|torchscript --output DIR``
writes ``DIR/`` with the model file(s) (``model.onnx``; ``model.xml`` + ``model.bin``; ``model.safetensors``;
``model.pt``) and ``densevision.json``: task, class names, palette or COCO category ids, preprocessing
(input size, mean / std, sliding window), the network's constructor config, the densevision version, the
checkpoint's sha256 and the verification figures. ``densevision predict --model DIR --backend ...`` runs it
with the same preprocessing as the checkpoint. The input size is the run's (its sliding window, else its
``input_size``); the batch axis is free, ``--dynamic`` frees height and width too (refused, with the sizes
that work, where the network cannot take any size). The folder appears only once verified.
``--format openvino --int8 --calibration-images N|FOLDER`` quantises with NNCF on N images of the run's
training split (or a folder), preprocessed as prediction does, then scores float32 and int8 on up to
``--validation-images`` images of a segmentation run's validation split (mIoU before and after, and how
many pixels keep float32's class), printed and recorded in ``densevision.json`` (``int8.validation``).

``densevision export --model NAME [--checkpoint WEIGHTS]`` exports a network built by name as
``<NAME>.onnx`` / ``<NAME>.pt`` files (``densevision.inference.export``), without run metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from torch import nn

from densevision.datasets.image_io import find_images, read_rgb_image
from densevision.inference.export import (
    FOLDER_FORMATS,
    ExportError,
    export_folder,
    export_model,
    export_size,
    run_metadata,
)
from densevision.inference.model_folder import read_metadata, write_metadata
from densevision.inference.preprocessing import Preprocessing
from densevision.models import create_model
from densevision.tasks.checkpoints import load_model_checkpoint, load_task, read_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model name; omit to export the model of --checkpoint's run")
    parser.add_argument("--checkpoint", type=Path, help="a fit run's .ckpt (or, with --model, a state dict)")
    parser.add_argument("--num-classes", type=int, help="classes of --model (default: the preset's)")
    parser.add_argument("--features-only", action="store_true", help="export a backbone's feature maps")
    parser.add_argument(
        "--format", choices=(*FOLDER_FORMATS, "both"),
        help="default: onnx for --checkpoint runs, both (onnx + torchscript files) for --model",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"),
        help="exported input size (default: the run's; 224 224 for --model)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1, help="--model: export sample batch")
    parser.add_argument("--dynamic", action="store_true", help="free batch and image size where possible")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 11 for detectors)")
    parser.add_argument("--int8", action="store_true", help="--format openvino: NNCF post-training int8")
    parser.add_argument(
        "--calibration-images", default="64", metavar="N|FOLDER",
        help="--int8: N images of the run's training split (default 64), or a folder of images",
    )  # fmt: skip
    parser.add_argument(
        "--validation-images", type=int, default=100, metavar="N",
        help="--int8: score float32 and int8 on N images of the run's validation split (0: skip)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
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


def spread(items: list, count: int) -> list:
    """``count`` items (at most all) evenly spread over ``items``, first and last included."""
    return [items[i] for i in np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)]


def run_config_file(checkpoint: Path) -> Path:
    """The ``config.yaml`` the fit that wrote ``checkpoint`` saved beside ``checkpoints/``."""
    return checkpoint.resolve().parent.parent / "config.yaml"


def calibration_images(spec: str, checkpoint: Path, preprocessing: Preprocessing) -> list[np.ndarray]:
    """``--calibration-images``: a folder, or N images of the run's training split (from the
    ``config.yaml`` the fit saved beside ``checkpoints/``), each preprocessed as prediction does."""
    if spec.isdigit():
        count = int(spec)
        config_file = run_config_file(checkpoint)
        try:
            data = (yaml.safe_load(config_file.read_text()) or {})["data"]["init_args"]
            folder = Path(data["root"]) / data.get("train_split", "train")
        except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
            raise ExportError(
                f"--calibration-images {spec}: cannot find the run's training images ({config_file}: "
                f"{type(err).__name__} {err}); give a folder of images instead: --calibration-images DIR"
            ) from err
        files = spread(find_images(folder), count)
    else:
        files = find_images(Path(spec))
    return [preprocessing.image(read_rgb_image(f)) for f in files]


def _run_data(checkpoint: Path):
    """The data module of the fit that wrote ``checkpoint`` (its ``config.yaml``), built as fit built it."""
    data = (yaml.safe_load(run_config_file(checkpoint).read_text()) or {})["data"]
    if not str(data["class_path"]).startswith("densevision."):
        raise ValueError(f"data.class_path {data['class_path']!r} is not a densevision data module")
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    return parser.instantiate_classes(parser.parse_object({"data": data})).data


def score_int8(folder: Path, checkpoint: Path, count: int) -> None:
    """Float32 and int8 of the export ``folder`` on up to ``count`` images of the run's validation split,
    as prediction runs them: prints the mIoU before and after and records them in ``densevision.json``."""
    from densevision.datasets.segmentation import read_image, read_mask
    from densevision.inference.backends import openvino_backend
    from densevision.inference.evaluate import score_segmentation
    from densevision.inference.preprocessing import numpy_forward

    metadata = read_metadata(folder)
    if metadata["task"] != "segmentation":
        print(f"int8 validation score: measured for segmentation runs, this is a {metadata['task']} run")
        return
    try:
        data = _run_data(checkpoint)
        dataset = data.dataset("val")
    except Exception as err:  # a moved dataset or an edited config: the export stands, say why
        print(f"int8 validation score not measured: cannot build the run's validation split "
              f"({type(err).__name__}: {err}); score the int8 folder with densevision predict --int8 and "
              "densevision evaluate")  # fmt: skip
        return
    samples = spread(dataset.samples, count)

    def pairs():
        for sample in samples:
            label = read_mask(sample.mask)
            yield read_image(sample.image), dataset.label_map(label) if dataset.label_map else label

    forwards = {precision: numpy_forward(openvino_backend(folder / file, precision=precision))
                for precision, file in (("fp32", "model.xml"), ("int8", "model_int8.xml"))}  # fmt: skip
    scores = score_segmentation(forwards, pairs(), Preprocessing.from_dict(metadata["preprocessing"]),
                                num_classes=data.num_classes, ignore_index=data.ignore_index)  # fmt: skip
    before, after = scores["fp32"]["mIoU"], scores["int8"]["mIoU"]
    print(f"validation mIoU on {len(samples)} images of {dataset.root / dataset.split}: float32 "
          f"{before:.4f} -> int8 {after:.4f} ({100 * (after - before):+.2f} points); int8 masks equal to "
          f"float32's on {scores['int8']['pixel_agreement']:.2%} of pixels")  # fmt: skip
    metadata["int8"]["validation"] = {
        "images": len(samples), "split": str(dataset.root / dataset.split), "miou_float32": before,
        "miou_int8": after, "pixel_agreement": scores["int8"]["pixel_agreement"],
    }  # fmt: skip
    write_metadata(folder, metadata)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model is None and args.checkpoint is not None:
        return export_run(args)
    if args.format not in (None, "onnx", "torchscript", "both") or args.int8:
        raise ValueError(
            f"--format {args.format}{' --int8' if args.int8 else ''} exports a fit run's model folder: "
            "give --checkpoint RUN.ckpt without --model"
        )
    model, name = load_export_model(args)
    formats = ("onnx", "torchscript") if args.format in (None, "both") else (args.format,)
    results = export_model(
        model, args.output, name=name, formats=formats, input_size=args.input_size or (224, 224),
        batch_size=args.batch_size, dynamic=args.dynamic, opset=args.opset,
    )  # fmt: skip
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)}/{len(results)} verifications within tolerance")
    return 1 if failed else 0


def export_run(args: argparse.Namespace) -> int:
    """``--checkpoint RUN.ckpt``: the run's model folder (``densevision.inference.export.export_folder``)."""
    fmt = args.format or "onnx"
    if fmt == "both":
        raise ValueError("--format both writes loose files of --model; a run's folder takes one format")
    if args.int8 and fmt != "openvino":
        raise ValueError("--int8 quantises OpenVINO models: add --format openvino")
    task = load_task(args.checkpoint)
    metadata = run_metadata(task, read_checkpoint(args.checkpoint).hyper_parameters, args.checkpoint)
    size = export_size(metadata, task.model, args.input_size, args.dynamic)
    calibration = None
    if args.int8:
        preprocessing = Preprocessing.from_dict({**metadata["preprocessing"], "input_size": size})
        calibration = calibration_images(args.calibration_images, args.checkpoint, preprocessing)
    results = export_folder(
        task.model, args.output, fmt=fmt, metadata=metadata, input_size=size, dynamic=args.dynamic,
        opset=args.opset, calibration=calibration, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"{len(results)}/{len(results)} verifications within tolerance")
    if args.int8 and args.validation_images > 0:
        score_int8(args.output, args.checkpoint, args.validation_images)
    return 0
