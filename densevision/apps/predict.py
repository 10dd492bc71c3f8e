"""``densevision predict --checkpoint RUN.ckpt --input IMG_OR_DIR --output OUT`` (also ``densevision infer``):
a trained checkpoint on image files, without a config or a data module; or
``densevision predict --model EXPORT_DIR --backend torch|onnxruntime|openvino ...``: a folder of
``densevision export`` on any runtime.

The model is rebuilt from the checkpoint alone (``densevision.tasks.checkpoints``, ``weights_only=True``),
or read from the export folder (``densevision.inference.backends``). Both go through one preprocessing
(``densevision.inference.preprocessing``: resized to the run's input size, normalised with the run's
mean / std, sliding windows and flip TTA where the run asks) and postprocessing (logits back to each
image's size before the argmax), so every backend writes the same files. Writes, per image ``<name>``
(its path under the input folder, suffix ``.png``: ``a/x.png`` and ``b/x.png`` stay apart; ``x.png`` and
``x.jpg`` side by side become ``x.png.png`` and ``x.jpg.png``):

- segmentation: ``OUT/masks/<name>`` (class indices, 8-bit single channel) and
  ``OUT/overlays/<name>`` (colour overlay, in the run's palette);
- detection: ``OUT/overlays/<name>`` (boxes, class names, scores and instance masks drawn) and, for all
  images, ``OUT/predictions.json`` (COCO results: ``image_id``, ``category_id`` = the training data's COCO
  category id, as Lightning's predict writes it, ``bbox`` [x, y, w, h] in pixels, ``score``, RLE
  ``segmentation`` for masks) with ``OUT/images.json`` (COCO ``images``: id, file_name, height, width);
- ``OUT/predicted_by.json``: the checkpoint or export folder, backend and preprocessing used.

An output folder that holds earlier predictions is refused (two models' outputs are never mixed);
``--overwrite`` replaces that whole set (masks, overlays and the JSON files of predict and evaluate).
Reading, resizing and writing images run in threads beside the network.

Unreadable images (truncated, empty, not an image, over PIL's pixel limit) are skipped and listed in one
warning; ``--strict`` stops at the first. The output folder is checked for writing before any work.
``--max-size N`` runs images whose longer side exceeds N pixels downscaled (outputs at the original size).

The model runs through ``densevision.optimize_for_inference`` (BN folded, channels-last, bfloat16
autocast where the CPU has AMX / AVX512-BF16; a detector's backbone only), and the first image is also run
by the original model in eager float32: the agreement (pixels with the same class, or detections matched
at IoU >= 0.5) and both times are printed. ``--no-optimize`` runs the original model alone,
``--bf16`` / ``--no-bf16`` override the automatic choice and ``--compile`` adds ``torch.compile``.
With ``--model`` and ONNX Runtime or OpenVINO, ``--bf16`` / ``--no-bf16`` set OpenVINO's inference
precision (default: OpenVINO's own, bfloat16 on CPUs with AMX / AVX512-BF16); ONNX Runtime runs float32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densevision.apps.inference_args import add_inference_arguments
from densevision.datasets.image_io import check_writable, find_images
from densevision.inference.backends import BACKENDS, load_backend
from densevision.inference.model_folder import check_backend, load_model, preprocessing_of, read_metadata
from densevision.inference.predict import check_fresh_output, predict
from densevision.inference.preprocessing import Preprocessing

# the runtime that runs each export format when --backend is not given
DEFAULT_BACKEND = {"safetensors": "torch", "onnx": "onnxruntime", "openvino": "openvino"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision predict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + "\nWith --config / -c, `densevision predict` is Lightning's predict instead "
        "(its options: densevision predict -c CONFIG --help).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a densevision fit run's .ckpt")
    source.add_argument("--model", type=Path, help="a folder written by densevision export --checkpoint")
    parser.add_argument(
        "--backend", choices=BACKENDS,
        help="--model: the runtime (default: the folder's format's: safetensors torch, onnx onnxruntime, "
        "openvino openvino)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="--model with onnxruntime / openvino: intra-op threads")
    parser.add_argument(
        "--int8", action="store_true", help="--backend openvino: run export --int8's model_int8.xml"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier predictions in --output")
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
    if args.backend is not None and args.model is None:
        raise ValueError("--backend runs an export folder: give --model EXPORT_DIR (--checkpoint runs torch)")
    files = find_images(args.input)
    check_writable(args.output)
    if not args.overwrite:  # before loading any model: the refusal should come at once
        check_fresh_output(args.output)
    options = dict(
        root=args.input if args.input.is_dir() else args.input.parent, max_size=args.max_size,
        strict=args.strict, progress=args.progress, device=args.device, optimize=args.optimize,
        bf16=args.bf16, compile=args.compile, score_threshold=args.score_threshold, overwrite=args.overwrite,
    )  # fmt: skip
    if args.model is not None:
        metadata = read_metadata(args.model)
        model, labels, source = _export_folder(args, metadata)
    else:
        from densevision.tasks.checkpoints import load_task  # Lightning: only a checkpoint needs it

        task = load_task(args.checkpoint)
        model, source = task.model, {"checkpoint": str(args.checkpoint), "backend": "torch"}
        labels = {
            "preprocessing": getattr(task, "preprocessing", None) or Preprocessing.from_hparams(task.hparams),
            "class_names": list(getattr(task, "class_names", None) or []),
            "category_ids": getattr(task, "category_ids", None),
            "palette": getattr(task, "palette", None),
        }
    labels["preprocessing"] = labels["preprocessing"].with_window(args.window_size, args.flip_tta)
    if args.model is not None:
        _check_network_input(args.model, metadata, source, labels["preprocessing"])
    predict(model, files, args.output, **options, **labels, source=source)
    return 0


def _export_folder(args: argparse.Namespace, metadata: dict) -> tuple[object, dict, dict]:
    """(the model or backend function, its labels and preprocessing, what predicted_by.json records) of
    the folder ``args.model`` whose checked ``densevision.json`` is ``metadata``."""
    backend = args.backend or DEFAULT_BACKEND.get(metadata["format"], "torch")
    if metadata["task"] not in ("segmentation", "detection"):
        raise ValueError(
            f"{args.model} holds a {metadata['task']} model; predict draws segmentation masks and detections "
            "(features: densevision extract)"
        )
    if metadata["task"] == "detection" and backend != "torch":
        raise ValueError(
            f"{args.model}: predict runs exported detectors with --backend torch (a --format safetensors "
            "folder); ONNX detectors are verified at export but not drawn by predict yet"
        )
    check_backend(args.model, metadata, backend)
    if args.int8 and backend != "openvino":
        raise ValueError("--int8 runs an OpenVINO int8 model: add --backend openvino")
    if backend == "torch":
        model = load_model(args.model)
    else:
        precision = "int8" if args.int8 else {True: "bf16", False: "f32", None: None}[args.bf16]
        try:
            # pipelined: several images in flight, each on its share of the cores (see predict)
            model = load_backend(args.model, backend, precision=precision, threads=args.threads,
                                 pipelined=True)  # fmt: skip
        except ImportError as err:  # the runtime is an optional extra: one line saying which
            raise ValueError(str(err)) from err
    labels = {
        "preprocessing": preprocessing_of(metadata),
        "class_names": list(metadata.get("class_names") or []),
        "category_ids": metadata.get("category_ids"),
        "palette": [tuple(c) for c in metadata.get("palette") or []] or None,
    }
    source = {"model_folder": str(args.model), "format": metadata["format"], "backend": backend,
              "checkpoint": metadata.get("checkpoint")}  # fmt: skip
    return model, labels, source


def _check_network_input(folder: Path, metadata: dict, source: dict, preprocessing: Preprocessing) -> None:
    """A fixed-size exported file takes only its size: say so before any image is read."""
    window = (preprocessing.sliding_window or {}).get("window_size")
    size = ((window, window) if isinstance(window, int) else window) or preprocessing.input_size
    exported = tuple(metadata.get("input_shape", [])[-2:])
    if source["backend"] == "torch" or "height" in metadata.get("dynamic_axes", []) or size is None:
        return
    if tuple(size) != exported:
        raise ValueError(
            f"{folder} takes {exported[0]}x{exported[1]} inputs, and this prediction would feed it "
            f"{size[0]}x{size[1]}: use --window-size {exported[0]} {exported[1]} or none, or export again "
            "with --input-size / --dynamic"
        )
