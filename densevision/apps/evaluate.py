"""``densevision evaluate segmentation|detection``: score predictions already on disk.

  densevision evaluate segmentation --pred out/masks --gt ../shared/data/camvid/testannot --dataset camvid
  densevision evaluate segmentation --pred out/masks --gt labels/ --num-classes 5 --ignore-index 255
  densevision evaluate detection --pred out/predictions.json --images out/images.json --gt instances.json

Segmentation: label PNGs matched to predicted PNGs by file name, scored at the labels' resolution with the
ignore index (void) left out: mIoU, per-class IoU and global pixel accuracy. Detection: COCO AP with
pycocotools. The report is printed and written as JSON (``--output``, default beside the predictions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from densevision.datasets.segmentation import CAMVID_CLASSES, CAMVID_IGNORE_INDEX
from densevision.inference.evaluate import (
    EvaluationError,
    LabelValueError,
    evaluate_detection_file,
    evaluate_segmentation_folders,
    segmentation_table,
)

LABEL_SPACES = {"camvid": (len(CAMVID_CLASSES), CAMVID_IGNORE_INDEX, list(CAMVID_CLASSES))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densevision evaluate", formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    seg = kinds.add_parser("segmentation", help="predicted mask PNGs vs label PNGs")
    seg.add_argument("--pred", type=Path, required=True, help="folder of predicted class-index PNGs")
    seg.add_argument("--gt", type=Path, required=True, help="folder of label PNGs (same file names)")
    seg.add_argument("--dataset", choices=sorted(LABEL_SPACES), help="a known label space (classes, void)")
    seg.add_argument("--num-classes", type=int, help="scored classes (unless --dataset)")
    seg.add_argument("--ignore-index", type=int, help="label value not scored (void)")
    seg.add_argument("--class-names", help="comma-separated class names")
    seg.add_argument("--output", type=Path, help="report JSON (default: <pred>/../evaluation.json)")
    det = kinds.add_parser("detection", help="COCO results json vs COCO instances json")
    det.add_argument("--pred", type=Path, required=True, help="COCO results json (predictions.json)")
    det.add_argument("--gt", type=Path, required=True, help="COCO instances json")
    det.add_argument("--images", type=Path, help="images.json beside the predictions: match images by name")
    det.add_argument("--output", type=Path, help="report JSON (default: beside the predictions)")
    return parser


def _label_value_hint(err: LabelValueError, num_classes: int, ignore_index: int | None) -> str:
    """The library's message in the command's words: which flag to add, and the known label spaces whose
    void is that value."""
    known = [f"--dataset {name}" for name, (n, void, _) in sorted(LABEL_SPACES.items())
             if n == num_classes and void == err.value]  # fmt: skip
    fix = f"add --ignore-index {err.value}" + (f" (or {' / '.join(known)})" if known else "")
    return (
        f"{err.file}: label value {err.value} is not a class index in [0, {num_classes}) nor the ignore "
        f"index ({ignore_index}); if {err.value} marks unlabelled (void) pixels, {fix}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kind == "segmentation":
        num_classes, ignore_index, names = LABEL_SPACES.get(args.dataset, (None, None, None))
        num_classes = args.num_classes if args.num_classes is not None else num_classes
        ignore_index = args.ignore_index if args.ignore_index is not None else ignore_index
        names = args.class_names.split(",") if args.class_names else names
        if num_classes is None:
            parser.error("give --dataset or --num-classes")
        try:
            report = evaluate_segmentation_folders(
                args.pred, args.gt, num_classes=num_classes, ignore_index=ignore_index, class_names=names
            )
        except LabelValueError as err:
            raise EvaluationError(_label_value_hint(err, num_classes, ignore_index)) from err
        print(segmentation_table(report))
        output = args.output or args.pred.parent / "evaluation.json"
    else:
        report = evaluate_detection_file(args.pred, args.gt, images=args.images)
        for iou_type in ("bbox", "segm"):
            if iou_type in report:
                print(f"{iou_type}: " + ", ".join(f"{k} {v:.3f}" for k, v in report[iou_type].items()))
        output = args.output or args.pred.parent / "evaluation.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    print(f"wrote {output}")
    return 0
