"""Same as ``densevision extract``: ``python tools/extract_features.py --input imgs/ --output feats.npz``."""

import sys

from densevision.apps.extract import main

if __name__ == "__main__":
    sys.exit(main())
