"""Datasets, transforms presets, data modules and the generated embedded datasets."""

from densevision.datasets.datamodule import CamVidDataModule, SegmentationDataModule, ShapesDataModule
from densevision.datasets.segmentation import SegmentationDataError, SegmentationFolder
from densevision.datasets.shapes import ensure_shapes_dataset

__all__ = [
    "CamVidDataModule",
    "SegmentationDataError",
    "SegmentationDataModule",
    "SegmentationFolder",
    "ShapesDataModule",
    "ensure_shapes_dataset",
]
