"""Thin entry point: ``python tools/benchmark.py backbone ...`` == ``densevision benchmark backbone ...``."""

import sys

from densevision.apps.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
