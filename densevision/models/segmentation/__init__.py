"""Segmentation models: FC-DenseNet (Tiramisu), FC-HarDNet, the Tiramisu decoder on any backbone,
DenseASPP and DeepLabV3+ on dilated DenseNets, all on one base (``SegmentationModel``: encoder -> decoder
-> head), and sliding-window inference for large images."""

from densevision.models.segmentation.base import SegmentationModel, resize_logits
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
    "DeepLabV3Plus",
    "DenseASPP",
    "DenseASPPHead",
    "FCDenseNet",
    "FCHarDNet",
    "SegmentationModel",
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
    "fcdensenet103",
    "fcdensenet56",
    "fcdensenet67",
    "fchardnet70",
    "resize_logits",
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
