"""``densevision benchmark``: time and memory of densevision models against torchvision, and of the
deployment runtimes, in one run.

Subcommands:
    backbone   densenet121 (or ``--model``) vs torchvision's: training-step time and peak training memory,
               plain and memory-efficient, and inference throughput (eager and ``optimize_for_inference``).
    depth      peak training memory of CIFAR DenseNet-BC at growing depth, plain vs memory-efficient.
    family     registered models side by side (default DenseNet-121, RDNet-T, VoVNet-39, HarDNet-68; or
               ``--models fchardnet70 fcdensenet56 fcdensenet103``): parameters, GFLOPs per image,
               training-step time and eager inference latency as ratios to the first model.
    models     any registered models (``--models fcdensenet103 ...``): parameters, GFLOPs, step time,
               peak memory plain / memory-efficient, inference throughput eager / optimised, each also
               against the model run the way torchvision runs a DenseNet (the module path).
    deploy     the CPU runtimes side by side: torchvision-style eager fp32 (the baseline), densevision
               eager / optimised fp32 / bf16 / compiled, ONNX Runtime, OpenVINO f32 / bf16 / int8 (through
               ``load_backend`` and raw OpenVINO side by side), for densenet121 (batch 8, 224x224),
               fcdensenet56 and fchardnet70 (batch 1, 360x480).

The measurement code and its method live in ``densevision.benchmarks``: times are interleaved rounds and
median per-round ratios; peak memory is the allocator peak of one training step in a fresh subprocess;
agreement is measured on CamVid val images where ``../shared/data/camvid`` (``--camvid``) exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from densevision.benchmarks import backbone, deploy


def _add_common(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median ratio)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke run")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the optimised inference path (deprecated: no faster measured)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the tables to this JSON file")
    if name not in ("depth", "family"):
        p.add_argument("--camvid", default=None,
                       help="CamVid folder for the agreement images (default: ../shared/data/camvid "
                       "where it exists; 'none': the random timing batch)")
        p.add_argument("--agreement-images", type=int, default=4,
                       help="CamVid val images the inference paths are compared on")
    if name == "backbone":
        p.add_argument("--model", default="densenet121", help="an ImageNet DenseNet both libraries have")
    if name == "depth":
        p.add_argument("--depths", type=int, nargs="+", default=[100, 250, 400])
        p.add_argument("--growth", type=int, default=12)
    if name in ("models", "family"):
        default = ["densenet121"] if name == "models" else ["densenet121", "rdnet_tiny", "vovnet39",
                                                            "hardnet68"]
        p.add_argument("--models", nargs="+", default=default)
        p.add_argument("--width", type=int, default=None,
                       help="image width (default: --image-size, square), e.g. 480 for CamVid's 360x480")


def _add_deploy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(deploy.DEFAULT_SETUPS),
                   help="models to time (default: densenet121 fcdensenet56 fchardnet70); each at its "
                   "default batch and size (DenseNet-121: 8 x 224x224, segmenters: 1 x 360x480)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime (default 2)")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON file for the tables (default: docs/results/deploy-<cpu>.json)")
    p.add_argument("--page", type=Path, default=None,
                   help="also write the results page (e.g. docs/results/deployment.md)")
    p.add_argument("--calibration-images", type=int, default=16,
                   help="random-weight int8 calibration batches for OpenVINO int8 (0: skip int8)")
    p.add_argument("--compile", action="store_true",
                   help="also time optimize_for_inference(compile=True) (inductor, freezing; deprecated: "
                   "minutes of compiling per model)")
    p.add_argument("--camvid-frames", type=Path, default=None,
                   help="a folder of CamVid frames: also time densevision predict end to end per backend")
    p.add_argument("--predict-model", type=Path, default=None,
                   help="the export folder (or checkpoint) densevision predict runs on --camvid-frames")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round, no compile: a smoke run")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densevision benchmark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("backbone", "densevision vs torchvision DenseNet"),
                           ("depth", "peak memory vs depth (DenseNet-BC, CIFAR size)"),
                           ("models", "registered models: params, GFLOPs, time, memory, inference"),
                           ("family", "models side by side: params, GFLOPs, time and memory ratios")):
        _add_common(sub.add_parser(name, help=helptext), name)
    _add_deploy(sub.add_parser("deploy", help="CPU runtimes side by side: PyTorch, ONNX Runtime, OpenVINO"))
    return parser


_DEFAULT_SIZES = {"backbone": (8, 224), "depth": (16, 32), "models": (2, 224), "family": (8, 224)}
_QUICK_SIZES = {"backbone": (2, 64), "depth": (2, 32), "models": (2, 64), "family": (2, 64)}


def _run_deploy(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.threads < 1 or args.calibration_images < 0:
        raise SystemExit("--repeats and --threads must be positive and --calibration-images at least 0")
    if args.camvid_frames is not None and not args.camvid_frames.is_dir():
        raise SystemExit(f"--camvid-frames {args.camvid_frames}: no such folder (give a folder of frames)")
    if (args.camvid_frames is None) != (args.predict_model is None):
        raise SystemExit("--camvid-frames and --predict-model go together: give both or neither")
    report = deploy.run_deploy(
        args.models, repeats=1 if args.quick else args.repeats, threads=args.threads,
        calibration_images=min(args.calibration_images, 2) if args.quick else args.calibration_images,
        compile=args.compile and not args.quick, quick=args.quick, camvid_frames=args.camvid_frames,
        predict_model=args.predict_model,
    )
    output = args.output or Path("docs/results") / f"deploy-{report['cpu']['slug']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {output}")
    if args.page:
        args.page.parent.mkdir(parents=True, exist_ok=True)
        args.page.write_text(deploy.results_page(report))
        print(f"wrote {args.page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "deploy":
        return _run_deploy(args)
    batch, size = (_QUICK_SIZES if args.quick else _DEFAULT_SIZES)[args.command]
    args.batch_size = args.batch_size or batch
    args.image_size = args.image_size or size
    if args.quick:
        args.repeats = 1
        if args.command == "depth":
            args.depths = [d for d in args.depths if d <= 100] or args.depths[:1]
    sizes = (args.repeats, args.batch_size, args.image_size, getattr(args, "agreement_images", 1),
             1 if getattr(args, "width", None) is None else args.width)
    if min(sizes) < 1:
        raise SystemExit("--repeats, --batch-size, --image-size, --width and --agreement-images must be "
                         "positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    runner = {"backbone": backbone.run_backbone, "depth": backbone.run_depth, "models": backbone.run_models,
              "family": backbone.run_family}[args.command]
    tables = runner(args)
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0
