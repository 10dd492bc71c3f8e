"""Segmentation models: FC-DenseNet (Tiramisu), the Tiramisu decoder on DenseNet backbones, DenseASPP and
DeepLabV3+ on dilated DenseNets, and sliding-window inference for images larger than the training crops."""

from densevision.models.segmentation.decoder import TiramisuDecoder
from densevision.models.segmentation.deeplabv3plus import (
    DeepLabV3Plus,
    deeplabv3plus_densenet,
    deeplabv3plus_densenet121,
    deeplabv3plus_densenet161,
)
from densevision.models.segmentation.denseaspp import (
    DenseASPP,
    DenseASPPHead,
    denseaspp_densenet,
    denseaspp_densenet121,
    denseaspp_densenet161,
    denseaspp_densenet169,
    denseaspp_densenet201,
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
    "DeepLabV3Plus",
    "DenseASPP",
    "DenseASPPHead",
    "FCDenseNet",
    "TiramisuDecoder",
    "TiramisuSegmenter",
    "deeplabv3plus_densenet",
    "deeplabv3plus_densenet121",
    "deeplabv3plus_densenet161",
    "denseaspp_densenet",
    "denseaspp_densenet121",
    "denseaspp_densenet161",
    "denseaspp_densenet169",
    "denseaspp_densenet201",
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
