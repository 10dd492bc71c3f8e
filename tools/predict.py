"""Same as ``densevision predict`` without a config: ``python tools/predict.py --checkpoint
run/checkpoints/last.ckpt --input images/ --output predictions/``."""

import sys

from densevision.apps.predict import main

if __name__ == "__main__":
    sys.exit(main())
