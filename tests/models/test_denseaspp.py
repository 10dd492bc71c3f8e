"""DenseASPP and DeepLabV3+ on DenseNet backbones: presets, parameter counts, the paper's structure, any
H x W, torchvision weights in the backbone, training steps and clear errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import densevision
from densevision.models.backbones.densenet import DenseNet
from densevision.models.segmentation import DeepLabV3Plus, DenseASPP
from tests.bn import randomize_bn_statistics

PRESETS = ["denseaspp_densenet121", "denseaspp_densenet161", "denseaspp_densenet169",
           "denseaspp_densenet201", "deeplabv3plus_densenet121", "deeplabv3plus_densenet161"]  # fmt: skip


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny_backbone(output_stride: int, out_features=None) -> DenseNet:
    return DenseNet(
        growth_rate=4, block_config=(1, 1, 1, 1), stem_channels=8, features_only=True,
        out_features=out_features, output_stride=output_stride,
    )  # fmt: skip


def test_presets_are_registered():
    assert set(PRESETS) <= set(densevision.list_models())


def test_denseaspp161_parameter_count_is_the_authors_model():
    model = densevision.create_model("denseaspp_densenet161", num_classes=19)
    assert count_params(model) == 35_395_427
    # The authors' DenseNet-161 checkpoint is 142.7 MB (float32 parameters and BatchNorm statistics).
    values = count_params(model) + sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")
    )
    assert abs(values * 4 - 142.7e6) < 0.005 * 142.7e6


def test_denseaspp_structure_follows_the_paper():
    model = densevision.create_model("denseaspp_densenet161")
    assert model.backbone.feature_info[-1].stride == 8 and model.output_stride == 8
    head = model.head
    assert head.reduce[0].in_channels == 2208 and head.reduce[0].out_channels == 1104
    assert [layer.conv2.dilation[0] for layer in head.layers] == [3, 6, 12, 18, 24]
    assert [layer.conv1.in_channels for layer in head.layers] == [1104 + 128 * i for i in range(5)]
    assert {layer.conv1.out_channels for layer in head.layers} == {512}
    assert not hasattr(head.layers[0], "norm1") and all(hasattr(la, "norm1") for la in head.layers[1:])
    assert {layer.drop.p for layer in head.layers} == {0.1} and model.classifier[0].p == 0.1
    assert model.classifier[1].in_channels == head.out_channels == 1104 + 5 * 128
    assert densevision.create_model("denseaspp_densenet121").head.layers[4].conv2.out_channels == 64


def test_deeplabv3plus_structure_and_rates_follow_the_paper():
    model = densevision.create_model("deeplabv3plus_densenet121")
    assert [(s.name, s.stride) for s in model.backbone.feature_info] == [("c2", 4), ("c5", 16)]
    rates = [branch[0].dilation[0] for branch in model.aspp.convs[1:4]]
    assert rates == [6, 12, 18] and model.reduce[0].out_channels == 48
    os8 = densevision.create_model("deeplabv3plus_densenet121", output_stride=8)
    assert [branch[0].dilation[0] for branch in os8.aspp.convs[1:4]] == [12, 24, 36]
    assert os8.backbone.feature_info[-1].stride == 8


@pytest.mark.parametrize("name", ["denseaspp_densenet121", "deeplabv3plus_densenet121"])
@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_presets_give_logits_of_the_input_size(name, size):
    model = densevision.create_model(name, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


@pytest.mark.parametrize("head", ["denseaspp", "deeplabv3plus"])
def test_heads_train_on_any_feature_info_backbone(head):
    if head == "denseaspp":
        model = DenseASPP(backbone=_tiny_backbone(8), num_classes=3, mid_channels=8, growth_rate=4)
    else:
        backbone = _tiny_backbone(16, out_features=["c2", "c5"])
        model = DeepLabV3Plus(backbone=backbone, num_classes=3, aspp_channels=8, low_level_channels=4,
                              decoder_channels=8)  # fmt: skip
    x = torch.randn(2, 3, 37, 50)
    logits = model.train()(x)
    assert logits.shape == (2, 3, 37, 50)
    nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 37, 50))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["denseaspp_densenet121", "deeplabv3plus_densenet121"])
def test_torchvision_weights_load_into_the_backbone(tmp_path, name):
    reference = torchvision.models.densenet121()
    torch.save(reference.state_dict(), tmp_path / "densenet121.pth")
    model = densevision.create_model(name, weights=tmp_path / "densenet121.pth")
    got = model.backbone.state_dict()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_errors_name_what_was_received():
    with pytest.raises(ValueError, match=r"low_level_feature 'c3'.*returns \['c2', 'c5'\]"):
        DeepLabV3Plus(backbone=_tiny_backbone(16, out_features=["c2", "c5"]), num_classes=3,
                      low_level_feature="c3")  # fmt: skip
    with pytest.raises(ValueError, match=r"rates must be one or more dilation rates >= 1, got \(\)"):
        DenseASPP(backbone=_tiny_backbone(8), num_classes=3, rates=())
    with pytest.raises(ValueError, match=r"output_stride must be one of .*got 12"):
        densevision.create_model("denseaspp_densenet121", output_stride=12)
    with pytest.raises(ValueError, match=r"input \(4, 4\) is smaller"):
        densevision.create_model("denseaspp_densenet121")(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("name", ["denseaspp_densenet121", "deeplabv3plus_densenet121"])
def test_optimize_for_inference_folds_the_heads_and_agrees(name):
    model = randomize_bn_statistics(densevision.create_model(name, num_classes=4), 0.1).eval()
    fast = densevision.optimize_for_inference(model, bf16=False)
    x = torch.randn(1, 3, 48, 56)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fast(x), expected, atol=1e-3 * expected.abs().max().item(), rtol=1e-3)
