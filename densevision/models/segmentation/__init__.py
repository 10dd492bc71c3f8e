"""Segmentation models: FC-DenseNet (Tiramisu), FC-HarDNet, and the Tiramisu decoder on any backbone."""

from densevision.models.segmentation.decoder import TiramisuDecoder
from densevision.models.segmentation.fchardnet import (
    FCHarDNet,
    fchardnet70,
    tiramisu_hardnet68,
    tiramisu_rdnet_tiny,
    tiramisu_vovnet39,
)
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
    "FCHarDNet",
    "TiramisuDecoder",
    "TiramisuSegmenter",
    "fcdensenet56",
    "fcdensenet67",
    "fcdensenet103",
    "fchardnet70",
    "tiramisu_densenet",
    "tiramisu_densenet121",
    "tiramisu_densenet161",
    "tiramisu_densenet169",
    "tiramisu_densenet201",
    "tiramisu_densenet264",
    "tiramisu_hardnet68",
    "tiramisu_rdnet_tiny",
    "tiramisu_vovnet39",
]
