"""Datasets, transforms presets, data modules and the generated embedded datasets.

The names below are imported on first use (PEP 562): the data modules load Lightning, which the modules
that read and preprocess single images (``image_io``, ``transforms``: what ``densevision predict`` needs)
do not, so importing one of those costs no data module's import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names of _PUBLIC, for type checkers and the API reference
    from densevision.datasets.ade20k import ADE20KDataModule
    from densevision.datasets.cityscapes import CityscapesDataModule
    from densevision.datasets.segmentation import LabelMap, SegmentationDataError, SegmentationFolder
    from densevision.datasets.segmentation_datamodule import (
        CamVidDataModule,
        SegmentationDataModule,
        SegmentationDataOptions,
        ShapesDataModule,
    )
    from densevision.datasets.shapes_segmentation import ensure_shapes_segmentation_dataset
    from densevision.datasets.voc import VOCSegmentationDataModule
    from densevision.datasets.voc_detection import VOCDetectionDataModule, voc_xml_to_coco

_PUBLIC = {
    "ADE20KDataModule": "ade20k",
    "CamVidDataModule": "segmentation_datamodule",
    "CityscapesDataModule": "cityscapes",
    "LabelMap": "segmentation",
    "SegmentationDataError": "segmentation",
    "SegmentationDataModule": "segmentation_datamodule",
    "SegmentationDataOptions": "segmentation_datamodule",
    "SegmentationFolder": "segmentation",
    "ShapesDataModule": "segmentation_datamodule",
    "VOCDetectionDataModule": "voc_detection",
    "VOCSegmentationDataModule": "voc",
    "ensure_shapes_segmentation_dataset": "shapes_segmentation",
    "voc_xml_to_coco": "voc_detection",
}

__all__ = [
    "ADE20KDataModule",
    "CamVidDataModule",
    "CityscapesDataModule",
    "LabelMap",
    "SegmentationDataError",
    "SegmentationDataModule",
    "SegmentationDataOptions",
    "SegmentationFolder",
    "ShapesDataModule",
    "VOCDetectionDataModule",
    "VOCSegmentationDataModule",
    "ensure_shapes_segmentation_dataset",
    "voc_xml_to_coco",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
