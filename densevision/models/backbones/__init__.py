"""Backbones: the DenseNet family and its descendants (RDNet, VoVNet-V2, HarDNet)."""

from densevision.models.backbones.densenet import (
    DenseNet,
    cifar_densenet,
    fcdensenet_encoder,
    imagenet_densenet,
    load_densenet_weights,
)
from densevision.models.backbones.hardnet import HarDBlock, HarDNet, hardnet, load_hardnet_weights
from densevision.models.backbones.rdnet import RDNet, load_rdnet_weights, rdnet, remap_timm_rdnet_keys
from densevision.models.backbones.vovnet import VoVNet, load_vovnet_weights, remap_timm_vovnet_keys, vovnet

__all__ = [
    "DenseNet",
    "HarDBlock",
    "HarDNet",
    "RDNet",
    "VoVNet",
    "cifar_densenet",
    "fcdensenet_encoder",
    "hardnet",
    "imagenet_densenet",
    "load_densenet_weights",
    "load_hardnet_weights",
    "load_rdnet_weights",
    "load_vovnet_weights",
    "rdnet",
    "remap_timm_rdnet_keys",
    "remap_timm_vovnet_keys",
    "vovnet",
]
