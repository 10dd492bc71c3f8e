"""Sliding-window inference: tiled logits equal whole-image logits where the receptive field fits in the
windows, the model only ever sees window-sized batches (a 1024 x 2048 image included), blending and
window placement, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from densevision.models.segmentation.sliding_window import (
    blend_weights,
    sliding_window_inference,
    window_starts,
)


class Recording(nn.Module):
    """Wraps a model and records the shape of every input it is called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def _pointwise_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("flip_tta", [False, True])
def test_tiles_equal_the_whole_image_for_a_pointwise_model(blend, flip_tta):
    model = _pointwise_model()
    images = torch.randn(2, 3, 37, 90)  # taller than the window in width only: whole in height
    with torch.no_grad():
        tiled = sliding_window_inference(model, images, window_size=(48, 32), overlap=0.4, blend=blend,
                                         batch_size=3, flip_tta=flip_tta)  # fmt: skip
        torch.testing.assert_close(tiled, model(images), atol=1e-5, rtol=1e-5)


def test_tiles_equal_the_whole_image_where_the_receptive_field_fits():
    torch.manual_seed(0)
    # two 3x3 convs: each output pixel sees +-2 pixels, so only a window's 2-pixel rim differs
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 3, padding=1)).eval()
    images = torch.randn(1, 3, 40, 52)
    window, overlap, radius = (20, 24), 0.5, 2
    with torch.no_grad():
        tiled = sliding_window_inference(model, images, window_size=window, overlap=overlap, blend="constant")
        whole = model(images)
    # a pixel is exact when every window holding it also holds its receptive field (or the image border)
    exact = torch.ones(40, 52, dtype=torch.bool)
    for dim, (length, size) in enumerate(zip(images.shape[-2:], window, strict=True)):
        ok = torch.ones(length, dtype=torch.bool)
        for start in window_starts(length, size, overlap):
            for p in range(start, start + size):
                inside = (p - start >= radius or start == 0) and (start + size - 1 - p >= radius or
                                                                   start + size == length)  # fmt: skip
                ok[p] &= inside
        exact &= ok[:, None] if dim == 0 else ok[None, :]
    assert exact.float().mean() > 0.5
    torch.testing.assert_close(tiled[..., exact], whole[..., exact], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tiled[..., ~exact], whole[..., ~exact], atol=1e-5)  # the rims do differ


def test_an_image_no_larger_than_the_window_is_one_call():
    model = Recording(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval())
    images = torch.randn(2, 3, 30, 40)
    with torch.no_grad():
        tiled = sliding_window_inference(model, images, window_size=64, batch_size=2)
        torch.testing.assert_close(tiled, model.model(images))
    assert model.shapes == [(2, 3, 30, 40)]


@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_1024x2048_image_only_ever_meets_window_sized_batches(flip_tta):
    model = Recording(nn.Conv2d(3, 2, 1).eval())
    images = torch.randn(1, 3, 1024, 2048)
    window, batch_size = (256, 512), 3
    with torch.no_grad():
        out = sliding_window_inference(model, images, window_size=window, overlap=0.25, batch_size=batch_size,
                                       flip_tta=flip_tta)  # fmt: skip
    assert out.shape == (1, 2, 1024, 2048)
    windows = len(window_starts(1024, 256, 0.25)) * len(window_starts(2048, 512, 0.25))
    assert len(model.shapes) == math.ceil(windows / batch_size) * (2 if flip_tta else 1)
    assert all(s[0] <= batch_size and s[1:] == (3, *window) for s in model.shapes)


def test_windows_cover_the_image_and_end_at_its_border():
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]
    assert window_starts(101, 40, 0.5) == [0, 20, 40, 60, 61]
    assert window_starts(100, 40, 0.0) == [0, 40, 60]
    assert window_starts(30, 40, 0.5) == [0]
    for length, size, overlap in ((97, 13, 0.3), (64, 64, 0.5), (65, 64, 0.9)):
        starts = window_starts(length, size, overlap)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s : s + size] = True
        assert covered.all() and starts[-1] + min(size, length) == length


def test_gaussian_weights_peak_at_the_centre_and_never_vanish():
    w = blend_weights((17, 33), "gaussian")
    assert w.shape == (17, 33) and w[8, 16] == 1 and w.min() >= 1e-3
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    assert w[8, 0] < w[8, 8] < w[8, 16]
    assert (blend_weights((4, 5), "constant") == 1).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_size": (0, 5)}, r"window_size must be a positive int or \(height, width\), got \(0, 5\)"),
        ({"window_size": 8, "overlap": 1.0}, r"overlap must be in \[0, 1\).*got 1.0"),
        ({"window_size": 8, "blend": "linear"}, r"blend must be 'constant' or 'gaussian', got 'linear'"),
        ({"window_size": 8, "batch_size": 0}, r"batch_size must be an int >= 1.*got 0"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_inference(_pointwise_model(), torch.randn(1, 3, 16, 16), **options)


def test_a_model_that_changes_the_size_is_refused():
    model = nn.Conv2d(3, 2, 3, stride=2)
    with pytest.raises(ValueError, match=r"returned \(3, 2, 7, 7\) for windows of \(3, 3, 16, 16\)"):
        sliding_window_inference(model, torch.randn(1, 3, 16, 30), window_size=16)
