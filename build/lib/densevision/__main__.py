"""``python -m densevision`` = the ``densevision`` command."""

import sys

from densevision.cli import main

if __name__ == "__main__":
    sys.exit(main())
