"""Sliding-window inference: a segmentation model trained on crops predicts images of any size, tile by
tile, with memory bounded by the window and the batch of windows.

Windows of ``window_size`` step by ``window * (1 - overlap)`` (the last one in each row and column is
moved back to end at the border, as mmsegmentation's ``slide`` mode does); the model sees batches of at
most ``batch_size`` windows; their logits are blended into the image's logits with per-pixel weights,
constant or Gaussian (nnU-Net's: sigma = window / 8, so a window's centre counts more than its borders,
where the model saw less context). With ``flip_tta`` each window is also predicted mirrored left-right
and the two logits are averaged. An image smaller than the window in one dimension is taken whole in
that dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypedDict

import torch
from torch import Tensor

Blend = Literal["constant", "gaussian"]


class _SlidingWindowOptions(TypedDict, total=False):
    overlap: float
    blend: Blend
    batch_size: int
    flip_tta: bool


class SlidingWindow(_SlidingWindowOptions):
    """``sliding_window_inference``'s options as a config writes them (``window_size`` required), e.g.
    ``sliding_window: {window_size: [360, 480], overlap: 0.25, blend: gaussian}``."""

    window_size: int | Sequence[int]


def _pair(window_size: int | Sequence[int]) -> tuple[int, int]:
    size = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"window_size must be a positive int or (height, width), got {window_size!r}")
    return size


def check_options(
    window_size: int | Sequence[int], overlap: float, blend: str, batch_size: int
) -> tuple[int, int]:
    """Validate the options; -> the window as (height, width).

    Raises:
        ValueError: naming the option, its value and what is allowed.
    """
    size = _pair(window_size)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1) (a fraction of the window), got {overlap!r}")
    if blend not in ("constant", "gaussian"):
        raise ValueError(f"blend must be 'constant' or 'gaussian', got {blend!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (windows per model call), got {batch_size!r}")
    return size


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """First row (or column) of each window along one dimension; the last window ends at ``length``."""
    if window >= length:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = math.ceil((length - window) / step) + 1
    return [min(i * step, length - window) for i in range(count)]


def blend_weights(size: Sequence[int], blend: Blend, device: torch.device | None = None) -> Tensor:
    """(h, w) float32 weights of one window's pixels, in (0, 1]."""
    if blend == "constant":
        return torch.ones(tuple(size), device=device)
    axes = []
    for n in size:
        centre, sigma = (n - 1) / 2, n / 8
        x = torch.arange(n, dtype=torch.float32, device=device)
        axes.append(torch.exp(-0.5 * ((x - centre) / sigma) ** 2))
    weights = axes[0][:, None] * axes[1][None, :]
    # the corners of a Gaussian underflow far from the centre; no pixel may weigh 0 (nnU-Net does the same)
    return (weights / weights.max()).clamp_(min=1e-3)


def _windows(shape: Sequence[int], size: tuple[int, int], overlap: float) -> Iterator[tuple[int, int, int]]:
    """(image index, top, left) of every window, image by image."""
    n, _, height, width = shape
    for i in range(n):
        for top in window_starts(height, size[0], overlap):
            for left in window_starts(width, size[1], overlap):
                yield i, top, left


def sliding_window_inference(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    window_size: int | Sequence[int],
    overlap: float = 0.25,
    blend: Blend = "gaussian",
    batch_size: int = 4,
    flip_tta: bool = False,
) -> Tensor:
    """Logits of ``model`` on ``images``, window by window.

    Args:
        model: (B, C_in, h, w) -> (B, C, h, w) logits (a segmentation model, or an inference wrapper).
        images: (N, C_in, H, W), any H x W.
        window_size: window (height, width), or one int for a square; typically the training crop.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        blend: ``"constant"`` (plain mean of the overlapping logits) or ``"gaussian"``.
        batch_size: windows per model call (memory is bounded by it and the window size).
        flip_tta: also predict each window mirrored left-right and average the logits.

    Returns:
        (N, C, H, W) float32 logits on ``images``' device.

    Raises:
        ValueError: a bad option, or a model whose logits do not have the window's size.
    """
    size = check_options(window_size, overlap, blend, batch_size)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    size = (min(size[0], height), min(size[1], width))
    weights = blend_weights(size, blend, images.device)
    windows = list(_windows(images.shape, size, overlap))
    total = torch.zeros((height, width), device=images.device)  # every image has the same windows
    for i, top, left in windows:
        if i == 0:
            total[top : top + size[0], left : left + size[1]] += weights
    out: Tensor | None = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        tiles = torch.stack([images[i, :, y : y + size[0], x : x + size[1]] for i, y, x in chunk])
        logits = model(tiles).float()
        if flip_tta:
            logits = (logits + model(tiles.flip(-1)).float().flip(-1)) / 2
        if logits.dim() != 4 or tuple(logits.shape[-2:]) != size:
            raise ValueError(
                f"the model returned {tuple(logits.shape)} for windows of {(len(chunk), *tiles.shape[1:])}; "
                "sliding-window inference needs logits of the window's size (N, C, h, w)"
            )
        if out is None:
            out = images.new_zeros((images.shape[0], logits.shape[1], height, width), dtype=torch.float32)
        for (i, top, left), tile_logits in zip(chunk, logits, strict=True):
            out[i, :, top : top + size[0], left : left + size[1]] += tile_logits * weights
    return out / total
