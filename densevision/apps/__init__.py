"""The ``densevision`` commands besides Lightning's ``fit/validate/test/predict``: each module here is a thin
``main(argv) -> int`` over library functions (``densevision.inference``, ``densevision.datasets``,
``densevision.tasks``). The library never imports this package."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from densevision.tasks.lightning_cli import packaged_config

__all__ = ["APPS", "new_run_dir", "packaged_config"]

# name -> (module, one-line help). Modules are imported only when their command runs.
APPS: dict[str, tuple[str, str]] = {
    "demo": ("densevision.apps.demo", "train on the generated embedded dataset; show metrics and pictures"),
    "benchmark": ("densevision.apps.benchmark", "time and memory of densevision models vs torchvision"),
    "evaluate": ("densevision.apps.evaluate", "score predictions on disk (masks vs labels, COCO results)"),
    "export": ("densevision.apps.export", "export a model to ONNX / TorchScript and verify it"),
    "extract": ("densevision.apps.extract", "write a backbone's multi-scale features for a folder of images"),
    "convert": ("densevision.apps.convert", "dataset converters (YOLO txt / mask PNGs -> COCO json)"),
    "infer": ("densevision.apps.predict", "run a trained checkpoint on images (= predict without --config)"),
    "zoo": ("densevision.apps.zoo", "every registered model: parameters, GFLOPs, CPU latency, results"),
    "configs": ("densevision.apps.configs", "list the shipped configs, or copy one here to edit"),
}


def new_run_dir(name: str, parent: str | Path = "runs") -> Path:
    """``runs/<name>/<YYYYmmdd-HHMMSS>``: where a demo's run goes, a fresh folder each time."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = Path(parent) / name / stamp, 1
    while folder.exists():
        n += 1
        folder = Path(parent) / name / f"{stamp}-{n}"
    return folder
