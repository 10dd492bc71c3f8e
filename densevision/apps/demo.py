"""``densevision demo [segmentation|detection] [options]``: train on a generated embedded dataset, then
evaluate and draw predictions. Each task's demo lives with its task; options go to it."""

from __future__ import annotations

import importlib
import sys

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
        message = f"densevision demo: unknown task {task!r}; choose one of {sorted(DEMOS)}"
        print(f"error: {message}", file=sys.stderr)
        usage_error = SystemExit(message)
        usage_error.code = 2  # a usage error, as argparse's; the message stays the exception's text
        raise usage_error
    return int(importlib.import_module(DEMOS[task]).main(rest) or 0)
