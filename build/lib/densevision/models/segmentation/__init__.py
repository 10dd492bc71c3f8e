"""Segmentation models: FC-DenseNet (Tiramisu) and the Tiramisu decoder on DenseNet backbones."""

from densevision.models.segmentation.decoder import TiramisuDecoder
from densevision.models.segmentation.tiramisu import (
    FCDenseNet,
    TiramisuSegmenter,
    fcdensenet56,
    fcdensenet67,
    fcdensenet103,
    tiramisu_densenet,
    tiramisu_densenet121,
    tiramisu_densenet161,
    tiramisu_densenet169,
    tiramisu_densenet201,
    tiramisu_densenet264,
)

__all__ = [
    "FCDenseNet",
    "TiramisuDecoder",
    "TiramisuSegmenter",
    "fcdensenet56",
    "fcdensenet67",
    "fcdensenet103",
    "tiramisu_densenet",
    "tiramisu_densenet121",
    "tiramisu_densenet161",
    "tiramisu_densenet169",
    "tiramisu_densenet201",
    "tiramisu_densenet264",
]
