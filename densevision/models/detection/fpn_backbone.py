"""A densevision backbone + FPN as the backbone of torchvision's detectors, with stage freezing and frozen
BatchNorm.

The role of torchvision's ``BackboneWithFPN`` / ``resnet_fpn_backbone`` for any densevision backbone
(DenseNet, Huang et al., CVPR 2017; RDNet, VoVNet, HarDNet) feeding its stride 4..32 features to an FPN
(Lin et al., CVPR 2017): only its ``feature_info`` is read, its weights load through its ``load_weights``
and its stages come from its ``stage_groups`` (the ``FeatureBackbone`` contract).

Feature names: the backbone returns ``c2``..``c5`` and the ``FPN`` neck ``p2``..``p7`` (keyed by stride, the
package contract). torchvision's detectors, anchor generators and ``MultiScaleRoIAlign`` poolers expect the
names torchvision's own ``BackboneWithFPN`` produces, so ``DenseNetFPNBackbone.forward`` renames at this
boundary: the i-th pyramid level built from a backbone stage becomes ``str(i)``, the extra levels keep the
names of torchvision's extra blocks (``pool`` for max-pool P6, ``p6``/``p7`` for the conv levels):

====================  ==============================  ============================
detector (default)    densevision key                 torchvision key
====================  ==============================  ============================
Faster/Mask R-CNN     p2, p3, p4, p5, p6 (max-pool)   "0", "1", "2", "3", "pool"
RetinaNet, FCOS       p3, p4, p5, p6, p7 (convs)      "0", "1", "2", "p6", "p7"
====================  ==============================  ============================
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from densevision.models.features import FeatureSpec, select_features
from densevision.models.necks.fpn import FPN, ExtraLevels

_TORCHVISION_EXTRA_NAMES: dict[str, tuple[str, ...]] = {"none": (), "pool": ("pool",), "p6p7": ("p6", "p7")}


class DenseNetFPNBackbone(nn.Module):
    """A features-only densevision backbone followed by an ``FPN``, returning torchvision's level names.

    Args:
        body: a densevision backbone built with ``features_only=True`` (``DenseNet``, ``RDNet``,
            ``VoVNet``, ``HarDNet``, or any module returning a ``c*`` feature dict described by
            ``feature_info``) whose ``feature_info`` includes ``returned_stages``.
        returned_stages: backbone features fed to the FPN, high to low resolution.
        out_channels: FPN channels (every level).
        extra_levels: FPN extra levels (``"pool"``: R-CNN P6; ``"p6p7"``: RetinaNet/FCOS P6, P7).
        p6p7_source: ``"p5"`` or ``"c5"``: input of the P6 conv (see ``FPN``).

    Attributes:
        out_channels: channels of every returned map (torchvision's detectors read it).
        feature_info: ``FeatureSpec`` of each returned map under its densevision name (``p2``...).
        torchvision_names: the key each of those maps gets in ``forward``'s output, in the same order.
        featmap_names: keys of the levels built from backbone stages, for ``MultiScaleRoIAlign``.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        returned_stages: Sequence[str] = ("c2", "c3", "c4", "c5"),
        out_channels: int = 256,
        extra_levels: ExtraLevels = "pool",
        p6p7_source: Literal["p5", "c5"] = "p5",
    ) -> None:
        super().__init__()
        if not getattr(body, "features_only", False):
            raise ValueError(
                f"body must return a feature dict: build the {type(body).__name__} with features_only=True"
            )
        stages = select_features(body.feature_info, returned_stages)
        self.body = body
        self.fpn = FPN(stages, out_channels=out_channels, extra_levels=extra_levels, p6p7_source=p6p7_source)
        self.out_channels = out_channels
        self.feature_info: tuple[FeatureSpec, ...] = self.fpn.feature_info
        self.featmap_names = [str(i) for i in range(len(stages))]
        self.torchvision_names = (*self.featmap_names, *_TORCHVISION_EXTRA_NAMES[extra_levels])

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """(N, 3, H, W) -> {torchvision name: (N, out_channels, ~H / stride, ~W / stride)}, finest first."""
        pyramid = self.fpn(self.body(x))
        return OrderedDict(zip(self.torchvision_names, pyramid.values(), strict=True))


def convert_to_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` with its affine parameters and
    running statistics (the way torchvision's detectors use ImageNet backbones).

    Loading ImageNet weights into a BatchNorm model and converting afterwards is how densevision handles
    the one key ``FrozenBatchNorm2d`` lacks, ``num_batches_tracked``: the strict loader sees the file's keys
    on the BatchNorm model, and the conversion drops the counter, which a frozen layer never uses.

    Returns:
        ``module`` itself, changed in place, or a new ``FrozenBatchNorm2d`` when ``module`` is a BatchNorm.
    """
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or not module.affine:
            raise ValueError(
                f"cannot freeze {module}: FrozenBatchNorm2d needs running statistics and affine parameters"
            )
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps).to(module.weight.device)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_to_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def backbone_stages(body: nn.Module) -> list[list[nn.Module]]:
    """The modules of each stage of ``body``, first to last: its ``stage_groups()`` (the stem, then one
    group per stride: 5 for an ImageNet DenseNet, like the 5 trainable layers of torchvision's ResNets).

    Raises:
        TypeError: ``body`` has no ``stage_groups`` (it is not a ``FeatureBackbone``).
    """
    if not callable(getattr(body, "stage_groups", None)):
        raise TypeError(
            f"cannot freeze stages of a {type(body).__name__}: it is not a densevision backbone and has no "
            "stage_groups() method (the stem, then the modules of each stage)"
        )
    return body.stage_groups()


def freeze_stages(body: nn.Module, trainable_stages: int) -> None:
    """Stop gradients to all but the last ``trainable_stages`` stages of ``body`` (see ``backbone_stages``).

    Raises:
        ValueError: ``trainable_stages`` is outside ``[0, number of stages]``.
    """
    stages = backbone_stages(body)
    if not 0 <= trainable_stages <= len(stages):
        raise ValueError(
            f"trainable_stages must be in [0, {len(stages)}] for this {type(body).__name__} (stem + "
            f"{len(stages) - 1} stages; {len(stages)} = all trainable, 0 = all frozen), "
            f"got {trainable_stages}"
        )
    for stage in stages[: len(stages) - trainable_stages]:
        for module in stage:
            module.requires_grad_(False)


def densenet_fpn_backbone(
    body: nn.Module,
    *,
    returned_stages: Sequence[str] = ("c2", "c3", "c4", "c5"),
    extra_levels: ExtraLevels = "pool",
    out_channels: int = 256,
    weights: str | Path | None = None,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
) -> DenseNetFPNBackbone:
    """Load weights into ``body``, optionally freeze its BatchNorm and early stages, and add an FPN.

    Args:
        body: features-only densevision backbone (``DenseNet``, ``RDNet``, ``VoVNet``, ``HarDNet``) with
            BatchNorm layers where it has any, so that ``weights`` load strictly.
        returned_stages, extra_levels, out_channels: see ``DenseNetFPNBackbone``.
        weights: local state-dict file for ``body`` (an ImageNet DenseNet in torchvision or densevision
            format; timm format for RDNet and VoVNet).
        frozen_bn: replace BatchNorm by ``FrozenBatchNorm2d`` after loading (small detection batches).
        trainable_stages: how many of the last stages train (``None``: all); the rest get
            ``requires_grad=False``.
    """
    if weights is not None:
        if not callable(getattr(body, "load_weights", None)):
            raise TypeError(
                f"weights_backbone={str(weights)!r}: a {type(body).__name__} has no weight loader; load the "
                "weights into the backbone yourself and pass weights_backbone=None"
            )
        body.load_weights(weights)
    if frozen_bn:
        convert_to_frozen_batchnorm(body)
    freeze_stages(body, len(backbone_stages(body)) if trainable_stages is None else trainable_stages)
    return DenseNetFPNBackbone(
        body, returned_stages=returned_stages, out_channels=out_channels, extra_levels=extra_levels
    )
