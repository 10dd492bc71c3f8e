"""Small layers shared by the RDNet, VoVNet and HarDNet backbones (and FC-HarDNet): channel LayerNorm,
effective squeeze-excitation, conv-norm-activation. The backbone contract they all implement is
``densevision.models.features.FeatureBackbone``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from densevision.models.layers import NormLayer


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map (ConvNeXt's "channels_first" LayerNorm).

    A subclass of ``nn.LayerNorm`` so its parameters are ``weight`` / ``bias`` as in timm's.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W), each pixel's C values normalised."""
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class EffectiveSE(nn.Module):
    """Effective squeeze-excitation (Lee & Park, "CenterMask", CVPR 2020): one 1x1 conv on the global
    average, a hard-sigmoid gate; no channel reduction, so no information is squeezed out.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> norm -> ReLU, ``padding = kernel_size // 2``; modules ``conv`` and ``bn`` (timm's
    ``ConvNormAct`` names). ``relu=False`` leaves out the activation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
        groups: int = 1, norm_layer: NormLayer = nn.BatchNorm2d, relu: bool = True,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
            bias=False,
        )
        self.bn = norm_layer(out_channels)
        self.act = activation(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x
