"""``densevision convert yolo2coco|masks2coco``: write a COCO instances json from other label formats.

- ``yolo2coco``: YOLO ``cls cx cy w h`` txt files (normalised, one per image; none = no objects).
  Category ids are ``cls + 1`` unless ``--categories-from`` names a COCO json whose categories are
  matched by name (e.g. COCO's sparse ids 1..90 for COCO128's contiguous YOLO classes 0..79).
- ``masks2coco``: class-index PNGs (each connected region of a class = one instance) or, with
  ``--instance-masks``, instance-id PNGs whose class is the majority class under the instance. The class
  index is the category id. Segmentations are written as RLE or polygons.

Each output is loaded back with pycocotools before the command reports success. A labels (masks) folder
that matches no image is an error; unreadable images are skipped and listed in one warning (``--strict``
stops at the first). The output folder is checked for writing before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from densevision.datasets.converters import masks_to_coco, read_class_names, write_and_check, yolo_to_coco
from densevision.datasets.image_io import check_writable
from densevision.log import get_logger

log = get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densevision convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    yolo = sub.add_parser("yolo2coco", help="YOLO txt boxes -> COCO json")
    yolo.add_argument("--images", type=Path, required=True, help="image folder")
    yolo.add_argument("--labels", type=Path, required=True, help="folder of <image stem>.txt label files")
    yolo.add_argument("--names", type=Path, required=True, help="class names: YOLO yaml or one name per line")
    yolo.add_argument("--categories-from", type=Path, help="COCO json whose category ids to use (by name)")
    yolo.add_argument("--out", type=Path, required=True, help="output COCO json")
    masks = sub.add_parser("masks2coco", help="class-index (and instance-id) mask PNGs -> COCO json")
    masks.add_argument("--images", type=Path, required=True, help="image folder")
    masks.add_argument("--masks", type=Path, required=True, help="folder of <stem>.png class-index masks")
    masks.add_argument("--instance-masks", type=Path, help="folder of instance-id PNGs (0 = none)")
    masks.add_argument("--names", type=Path, help="class names (yaml or text); default class_<index>")
    masks.add_argument("--polygons", action="store_true", help="write polygons instead of RLE")
    masks.add_argument("--background", type=int, default=0, help="class index of background (default 0)")
    masks.add_argument("--ignore-index", type=int, default=255, help="class index to skip (default 255)")
    masks.add_argument("--min-area", type=int, default=1, help="smallest instance in pixels (default 1)")
    masks.add_argument("--out", type=Path, required=True, help="output COCO json")
    for sub_parser in (yolo, masks):
        sub_parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    check_writable(args.out.parent)
    if args.command == "yolo2coco":
        dataset = yolo_to_coco(args.images, args.labels, read_class_names(args.names), args.categories_from,
                               strict=args.strict)
    else:
        names = read_class_names(args.names) if args.names else None
        dataset = masks_to_coco(args.images, args.masks, names, instance_masks=args.instance_masks,
                                polygons=args.polygons, background=args.background,
                                ignore_index=args.ignore_index, min_area=args.min_area, strict=args.strict)
    coco = write_and_check(dataset, args.out)
    log.info(f"wrote {args.out}: {len(coco.imgs)} images, {len(coco.anns)} annotations, "
          f"{len(coco.cats)} categories (checked with pycocotools)")
    return 0
