"""Same as ``densevision export``: ``python tools/export.py --model densenet121 --output exported/``."""

import sys

from densevision.apps.export import main

if __name__ == "__main__":
    sys.exit(main())
