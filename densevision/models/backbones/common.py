"""Plumbing shared by the RDNet, VoVNet and HarDNet backbones: the feature contract (feature selection,
input checks, the classifier on the last feature), per-block gradient checkpointing, stage groups for
freezing, strict loading of timm-format weights through one remapping function per family, and the two
small layers both RDNet and VoVNet use (channel LayerNorm, effective squeeze-excitation).

The DenseNet family (``densenet.py``) predates this module and keeps its own copy of the same contract.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from densevision.models.backbones.densenet import adapt_input_conv
from densevision.models.features import FeatureSpec, check_backbone_input, select_features
from densevision.models.layers import NormLayer
from densevision.models.weights import load_state_dict_strict, load_weights_file

KeyRemap = Callable[[dict[str, Tensor]], dict[str, Tensor]]
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
_DOWNLOAD_NAMES = {"default", "imagenet", "imagenet1k_v1", "pretrained", "true"}


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


@contextlib.contextmanager
def _keep_running_stats(module: nn.Module) -> Iterator[None]:
    """Restore BatchNorm running statistics after a checkpoint's recomputation, which runs the forward a
    second time and must not update them twice (dropout masks repeat: the checkpoint replays the RNG)."""
    saved = [
        (buf, buf.clone()) for name, buf in module.named_buffers() if name.rsplit(".", 1)[-1] in _BN_STATS
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class FeatureBackbone(nn.Module):
    """Base of the RDNet / VoVNet / HarDNet backbones: the contract of ``densevision.models.features``.

    A subclass builds its layers, then calls ``_init_contract`` with every feature it can tap, and
    implements ``forward_features`` (calling ``_block`` for each checkpointable unit, ``_wants`` /
    ``_done`` to tap and stop early) and ``stage_groups``.

    Attributes:
        feature_info: the selected features (the last one is always kept when there is a classifier).
        available_features: every feature the architecture can return.
        in_chans, min_input_size, num_features, num_classes, features_only: as in ``DenseNet``.
        grad_checkpointing: recompute each block in backward instead of storing its activations.
    """

    in_chans: int
    classifier: nn.Module | None

    def _init_contract(
        self,
        specs: Sequence[FeatureSpec],
        *,
        in_chans: int,
        num_classes: int,
        features_only: bool,
        out_features: Sequence[str] | None,
        memory_efficient: bool,
    ) -> None:
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_chans = in_chans
        self.features_only = features_only
        self.available_features = tuple(specs)
        self.feature_info = select_features(specs, out_features)
        if not features_only and specs[-1] not in self.feature_info:
            self.feature_info = (*self.feature_info, specs[-1])  # the classifier needs the last stage
        self._wanted = frozenset(spec.name for spec in self.feature_info)
        self._last_wanted = self.feature_info[-1].name
        self.num_features = specs[-1].channels
        self.min_input_size = specs[-1].stride
        self.num_classes = 0 if features_only else num_classes
        self.grad_checkpointing = memory_efficient

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's name
        for the ``memory_efficient`` option)."""
        self.grad_checkpointing = enable

    def _block(self, module: nn.Module, *inputs: Tensor) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return cp.checkpoint(
                module, *inputs, use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), _keep_running_stats(module)),
            )
        return module(*inputs)

    def _wants(self, name: str) -> bool:
        return name in self._wanted

    def _done(self, name: str) -> bool:
        """True once the last selected feature ``name`` has been tapped: later stages are skipped."""
        return name == self._last_wanted

    def _check_input(self, x: Tensor) -> None:
        check_backbone_input(self, x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def stage_groups(self) -> list[list[nn.Module]]:
        """The modules of each stage, first to last: the stem, then one group per feature stride (used to
        freeze early stages for detection)."""
        raise NotImplementedError

    def load_weights(self, weights: str | Path) -> None:
        """Load a local state dict into this model through the family's loader (used by the detectors'
        ``weights_backbone``)."""
        raise NotImplementedError

    def pool_features(self, last: Tensor) -> Tensor:
        """(N, num_features, h, w) -> (N, num_features): global average (RDNet normalises it too)."""
        return torch.flatten(F.adaptive_avg_pool2d(last, 1), 1)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits (N, num_classes), pooled features (N, num_features) when ``num_classes == 0``, or the
        feature dict ``{name: (N, C, ~H / stride, ~W / stride)}`` when ``features_only``."""
        feats = self.forward_features(x)
        if self.features_only:
            return feats
        pooled = self.pool_features(feats[self.available_features[-1].name])
        return self.classifier(pooled) if self.classifier is not None else pooled


def load_backbone_weights(
    model: FeatureBackbone,
    weights: str | Path,
    remap: KeyRemap,
    *,
    first_conv: str,
    example: str,
) -> None:
    """Load a local state dict into ``model`` after ``remap`` (the family's one key-remapping function).

    The first conv's weight is adapted to ``model.in_chans`` as timm does; the classifier is dropped
    when the model has none, and kept fresh (with a warning) when its class count differs.

    Args:
        model: the backbone to load into.
        weights: local file (timm or densevision format; Lightning checkpoints holding a ``state_dict``).
        remap: file keys -> densevision keys; must leave densevision keys unchanged.
        first_conv: densevision key of the first conv's weight.
        example: how to save such a file, shown when ``weights`` names a download.

    Raises:
        ValueError: ``weights`` names a download instead of a file.
        FileNotFoundError, WeightsError: see ``load_weights_file`` and ``load_state_dict_strict``.
    """
    if isinstance(weights, str) and not Path(weights).exists() and weights.lower() in _DOWNLOAD_NAMES:
        raise ValueError(
            f"weights={weights!r} would need a download, and densevision never downloads. Save the weights "
            f"on a machine with internet ({example}) and pass the file's path."
        )
    state = remap(load_weights_file(weights))
    if first_conv in state:
        state[first_conv] = adapt_input_conv(state[first_conv], model.in_chans)
    file_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
    if model.classifier is None or (file_classes is not None and file_classes != model.num_classes):
        if model.classifier is not None:
            warnings.warn(
                f"{weights}: classifier has {file_classes} classes, model has {model.num_classes}; the "
                "classifier keeps its fresh initialisation",
                stacklevel=3,
            )
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        if model.classifier is not None:
            state.update({f"classifier.{k}": v for k, v in model.classifier.state_dict().items()})
    if getattr(model, "head_norm", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("head_norm.")}  # features_only
    load_state_dict_strict(model, state, source=str(weights))
