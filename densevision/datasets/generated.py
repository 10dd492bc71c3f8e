"""What the embedded datasets (``shapes_segmentation``, ``shapes_detection``) share: generated once per
set of generation parameters, which a stamp file in the dataset folder records."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path


def generate_once(
    root: str | Path, stamp: str, params: Mapping[str, object], write: Callable[[Path], None]
) -> Path:
    """``write(root)`` unless ``root / stamp`` records the same ``params`` (JSON); then record them.

    The stamp is written last, so an interrupted generation is redone on the next use, and a change of
    any parameter regenerates the data.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    path = root / stamp
    if path.is_file() and json.loads(path.read_text()) == params:
        return root
    write(root)
    path.write_text(json.dumps(params, indent=1))
    return root
