"""``densevision demo [segmentation|detection]``: train on a generated embedded dataset, then evaluate and
draw predictions. Each task's demo lives with its task."""

from __future__ import annotations

import argparse
import importlib

DEMOS = {
    "segmentation": "densevision.tasks.segmentation_demo",
    "detection": "densevision.tasks.detection_demo",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="densevision demo", description=__doc__)
    parser.add_argument("task", nargs="?", default="segmentation", choices=sorted(DEMOS))
    args, rest = parser.parse_known_args(argv)
    return int(importlib.import_module(DEMOS[args.task]).main(rest) or 0)
