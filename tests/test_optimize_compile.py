"""``optimize_for_inference(compile=True)``: inductor with freezing through ``torch.compile``'s public
options, deprecated with a warning that says why (measured no faster than the eager optimised path)."""

from __future__ import annotations

import pytest
import torch

from densevision import optimize_for_inference
from densevision.models.backbones.densenet import DenseNet


def test_compile_is_deprecated_and_uses_freezing(monkeypatch):
    seen = {}

    def fake_compile(module, **kwargs):  # records the call; compiling itself takes minutes on 2 cores
        seen.update(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = DenseNet(growth_rate=4, block_config=(1, 1), stem_channels=8, num_classes=3)
    with pytest.warns(FutureWarning, match=r"compile=True \(--compile\) is deprecated .* --backend openvino"):
        optimized = optimize_for_inference(model, bf16=False, compile=True)
    assert seen == {"options": {"freezing": True}}
    assert optimized.compiled and optimized.describe().endswith("compiled")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(optimized(x), model.eval()(x), atol=1e-4, rtol=1e-4)
