"""Datasets, transforms presets, data modules and the generated embedded datasets."""

from densevision.datasets.segmentation import SegmentationDataError, SegmentationFolder
from densevision.datasets.segmentation_datamodule import (
    CamVidDataModule,
    SegmentationDataModule,
    ShapesDataModule,
)
from densevision.datasets.shapes_segmentation import ensure_shapes_segmentation_dataset

__all__ = [
    "CamVidDataModule",
    "SegmentationDataError",
    "SegmentationDataModule",
    "SegmentationFolder",
    "ShapesDataModule",
    "ensure_shapes_segmentation_dataset",
]
