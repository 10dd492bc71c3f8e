"""optimize_for_inference: same predictions as the eval-mode model, BN folded, original untouched."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import densevision
from densevision import optimize_for_inference
from densevision.inference import optimize as inference
from densevision.inference.optimize import (
    InferenceModel,
    fold_batchnorms,
    inference_path,
)
from densevision.models.backbones.densenet import DenseNet


def _tiny(**kwargs) -> DenseNet:
    model = DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=7, **kwargs)
    with torch.no_grad():  # non-trivial statistics, so a wrong fold would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def test_fp32_path_matches_eval_model_and_leaves_the_original_alone():
    model = _tiny().train()
    x = torch.randn(3, 3, 32, 32)
    optimized = optimize_for_inference(model, bf16=False, example_input=x)
    assert model.training and isinstance(model.features.norm0, nn.BatchNorm2d)
    assert isinstance(optimized.model.features.norm0, nn.Identity)
    with torch.no_grad():
        expected = model.eval()(x)
    out = optimized(x)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_bf16_path_agrees_with_fp32_predictions():
    """bf16 keeps ~3 significant digits: outputs within 5% of the logit range, top-1 identical here."""
    model = _tiny().eval()
    x = torch.randn(8, 3, 32, 32)
    optimized = optimize_for_inference(model, bf16=True)
    with torch.no_grad():
        expected = model(x)
    out = optimized(x)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() <= 0.05 * (expected.max() - expected.min())
    assert (out.argmax(1) == expected.argmax(1)).float().mean() >= 0.75


def test_feature_dict_is_returned_with_its_keys():
    model = _tiny(features_only=True).eval()
    x = torch.randn(1, 3, 32, 32)
    optimized = optimize_for_inference(model, bf16=False)
    with torch.no_grad():
        expected = model(x)
    out = optimized(x)
    assert list(out) == list(expected)
    assert optimized.feature_info == model.feature_info
    for name in expected:
        torch.testing.assert_close(out[name], expected[name], atol=1e-4, rtol=1e-4)


def test_folds_stem_and_bottleneck_pairs_including_frozen_batchnorm():
    model = _tiny(norm_layer=FrozenBatchNorm2d)
    reference = _tiny()
    model.load_state_dict(reference.state_dict(), strict=False)
    # stem conv0->norm0 + one conv1->norm2 per bottleneck layer (2 blocks x 2 layers)
    assert fold_batchnorms(model) == 1 + 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_folded_model_stays_in_eval_and_keeps_the_fused_eval_block(bf16):
    """Folding must not leave a module in training mode: the dense blocks would step aside to the
    module path (one training flag per block) and the optimised model lose the fused eval block."""
    optimized = optimize_for_inference(_tiny(), bf16=bf16)
    assert not any(m.training for m in optimized.modules())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        optimized(torch.randn(2, 3, 32, 32))
    names = [event.name for event in prof.events()]
    # the fused eval block concatenates nothing and folds each layer's first BN into its fused pass:
    # only the transition's and the final BN run as BatchNorm (the module path: 4 more, and 4 cats)
    assert "aten::cat" not in names
    assert names.count("aten::native_batch_norm") == 2


def test_bad_example_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"must be an \(N, C, H, W\) tensor, got \(3, 32, 32\)"):
        optimize_for_inference(_tiny(), example_input=torch.randn(3, 32, 32))


def _tiny_detector() -> nn.Module:
    return densevision.create_model("fasterrcnn_densenet_tiny_fpn", num_classes=3, min_size=64, max_size=64)


def test_detector_takes_its_image_list_and_keeps_float32_boxes():
    detector = _tiny_detector().eval()
    images = [torch.rand(3, 48, 40), torch.rand(3, 40, 56)]
    with torch.no_grad():
        expected = detector(images)
    fp32 = optimize_for_inference(detector, bf16=False, example_input=images)
    assert fp32.describe() == "channels_last + fp32"
    for out, ref in zip(fp32(images), expected, strict=True):
        torch.testing.assert_close(out["boxes"], ref["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(out["scores"], ref["scores"], atol=1e-4, rtol=1e-4)
    bf16 = optimize_for_inference(detector, bf16=True)
    assert bf16.describe() == "channels_last + bf16 autocast (backbone)"
    outputs = bf16(images)
    assert [out["boxes"].dtype for out in outputs] == [torch.float32] * 2
    # boxes are decoded in float32: coordinates are not rounded to bf16's 8-bit mantissa steps
    boxes = outputs[1]["boxes"]
    assert (boxes.bfloat16().float() != boxes).any()
    features = bf16.model.backbone(torch.rand(1, 3, 64, 64))
    assert all(f.dtype == torch.float32 for f in features.values())


def test_detector_example_input_must_be_an_image_list():
    with pytest.raises(ValueError, match=r"must be a list of \(3, H, W\) tensors .* got \(1, 3, 64, 64\)"):
        optimize_for_inference(_tiny_detector(), example_input=torch.rand(1, 3, 64, 64))


def test_inference_path_switches(monkeypatch, caplog):
    model = _tiny().train()
    assert inference_path(model, optimize=False) is model and not model.training
    assert isinstance(inference_path(model, bf16=False), InferenceModel)
    with pytest.raises(ValueError, match="drop them or drop --no-optimize"):
        inference_path(model, optimize=False, compile=True)
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="densevision"):
        assert inference_path(model, bf16=True).bf16
    assert "no AMX / AVX512-BF16: bfloat16 autocast is emulated" in caplog.text
