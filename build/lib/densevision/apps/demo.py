"""``densevision demo [segmentation|detection] [options]``: train on a generated embedded dataset, then
evaluate and draw predictions. Each task's demo lives with its task; options go to it."""

from __future__ import annotations

import importlib

DEMOS = {
    "segmentation": "densevision.apps.demo_segmentation",
    "detection": "densevision.apps.demo_detection",
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: densevision demo [{'|'.join(DEMOS)}] [options]\n\n{__doc__}")
        return 0
    # The task is optional, so options such as `--max-epochs 3` are never taken for it.
    task, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("segmentation", argv)
    if task not in DEMOS:
        raise SystemExit(f"densevision demo: unknown task {task!r}; choose one of {sorted(DEMOS)}")
    return int(importlib.import_module(DEMOS[task]).main(rest) or 0)
