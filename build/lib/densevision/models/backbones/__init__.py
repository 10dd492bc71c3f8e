"""Backbones: DenseNet family."""

from densevision.models.backbones.densenet import (
    DenseNet,
    cifar_densenet,
    fcdensenet_encoder,
    imagenet_densenet,
    load_densenet_weights,
)

__all__ = ["DenseNet", "cifar_densenet", "fcdensenet_encoder", "imagenet_densenet", "load_densenet_weights"]
