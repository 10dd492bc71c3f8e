"""Backbones: the DenseNet family and its descendants (RDNet, VoVNet-V2, HarDNet), every one a
``densevision.models.features.FeatureBackbone``."""

from densevision.models.backbones.densenet import (
    DenseNet,
    cifar_densenet,
    fcdensenet_encoder,
    imagenet_densenet,
)
from densevision.models.backbones.hardnet import HarDBlock, HarDNet, hardnet
from densevision.models.backbones.rdnet import RDNet, rdnet, remap_timm_rdnet_keys
from densevision.models.backbones.vovnet import VoVNet, remap_timm_vovnet_keys, vovnet
from densevision.models.features import FeatureBackbone

__all__ = [
    "DenseNet",
    "FeatureBackbone",
    "HarDBlock",
    "HarDNet",
    "RDNet",
    "VoVNet",
    "cifar_densenet",
    "fcdensenet_encoder",
    "hardnet",
    "imagenet_densenet",
    "rdnet",
    "remap_timm_rdnet_keys",
    "remap_timm_vovnet_keys",
    "vovnet",
]
