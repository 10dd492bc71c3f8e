"""Datasets, transforms presets, data modules and the generated embedded datasets."""

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
