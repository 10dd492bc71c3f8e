"""Dilated DenseNets (``output_stride`` 16 / 8): real strides in ``feature_info``, torchvision weights
loading strictly, the same function as a torchvision DenseNet dilated by hand, and dilated dense blocks
equal to the module path in training and in eval."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import densevision
from densevision.models import fused_dense_block
from densevision.models.backbones.densenet import DenseNet
from densevision.models.layers import DenseBlock, set_fast_path
from tests.bn import randomize_bn_statistics

NAMES = ("c1", "c2", "c3", "c4", "c5")
STRIDES = {32: (2, 4, 8, 16, 32), 16: (2, 4, 8, 16, 16), 8: (2, 4, 8, 8, 8)}


def _tiny(output_stride: int | None, **options) -> DenseNet:
    return DenseNet(
        growth_rate=4, block_config=(1, 2, 2, 1), stem_channels=8, features_only=True,
        output_stride=output_stride, **options,
    )  # fmt: skip


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_feature_info_states_the_real_strides(output_stride, size):
    model = densevision.create_model("densenet121", features_only=True, output_stride=output_stride).eval()
    undilated = densevision.create_model("densenet121", features_only=True)
    assert [s.name for s in model.feature_info] == list(NAMES)
    assert [s.stride for s in model.feature_info] == list(STRIDES[output_stride])
    assert [s.channels for s in model.feature_info] == [s.channels for s in undilated.feature_info]
    assert model.min_input_size == output_stride
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        features = model(x)
    for spec, (name, tensor) in zip(model.feature_info, features.items(), strict=True):
        assert name == spec.name and tensor.shape[1] == spec.channels
        for got, full in zip(tensor.shape[-2:], size, strict=True):
            assert abs(got - full / spec.stride) <= 1, (name, tensor.shape, spec.stride)


def test_dilation_only_changes_pools_and_3x3_convs():
    model = densevision.create_model("densenet121", output_stride=8)
    f = model.features
    assert isinstance(f.transition1.pool, nn.AvgPool2d)
    assert isinstance(f.transition2.pool, nn.Identity) and isinstance(f.transition3.pool, nn.Identity)
    dilations = {name: {layer.conv2.dilation for layer in getattr(f, name).values()}
                 for name in ("denseblock1", "denseblock2", "denseblock3", "denseblock4")}  # fmt: skip
    assert dilations == {"denseblock1": {(1, 1)}, "denseblock2": {(1, 1)}, "denseblock3": {(2, 2)},
                         "denseblock4": {(4, 4)}}  # fmt: skip
    assert all(layer.conv2.padding == layer.conv2.dilation for layer in f.denseblock4.values())
    assert model.state_dict().keys() == torchvision.models.densenet121().state_dict().keys()


def _dilate_torchvision(model: torchvision.models.DenseNet, output_stride: int) -> None:
    """An independent reference: torchvision's DenseNet with its pools removed and convs dilated in place."""
    dilation = 1
    for i, stride in ((2, 16), (3, 32)):
        if stride > output_stride:
            getattr(model.features, f"transition{i}").pool = nn.Identity()
            dilation *= 2
        for layer in getattr(model.features, f"denseblock{i + 1}").values():
            layer.conv2.dilation = layer.conv2.padding = (dilation, dilation)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_torchvision_weights_load_strictly_and_match_a_dilated_torchvision(tmp_path, output_stride):
    reference = randomize_bn_statistics(torchvision.models.densenet121(), 0.1).eval()
    torch.save(reference.state_dict(), tmp_path / "densenet121.pth")
    model = densevision.create_model(
        "densenet121", weights=tmp_path / "densenet121.pth", output_stride=output_stride
    ).eval()
    _dilate_torchvision(reference, output_stride)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_cifar_densenets_take_an_output_stride_too():
    model = densevision.create_model("densenet_bc100_k12", features_only=True, output_stride=1).eval()
    assert [(s.name, s.stride) for s in model.feature_info] == [("c0", 1), ("c1", 1), ("c2", 1)]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 12, 10))["c2"].shape[-2:] == (12, 10)


@pytest.mark.parametrize("output_stride", [12, 64, 2, 0])
def test_bad_output_stride_is_a_clear_error(output_stride):
    allowed = r"\[4, 8, 16, 32\]"
    with pytest.raises(ValueError, match=rf"output_stride must be one of {allowed}.*got {output_stride}"):
        densevision.create_model("densenet121", output_stride=output_stride)


def test_tiramisu_decoder_refuses_a_dilated_backbone_with_the_reason():
    from densevision.models.segmentation import TiramisuSegmenter

    with pytest.raises(ValueError, match=r"consecutive strides.*\('c4', 8\)"):
        TiramisuSegmenter(backbone=_tiny(8), num_classes=3)


def _train_step(block: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    out = block(x)
    (out * weight).sum().backward()
    return out, x.grad


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["plain", "memory-efficient"])
@pytest.mark.parametrize("bn_size", [4, 0], ids=["bottleneck", "no-bottleneck"])
@pytest.mark.parametrize("dilation", [2, 4])
def test_dilated_block_in_training_equals_the_module_path(bn_size, memory_efficient, dilation):
    block = DenseBlock(3, 6, 4, bn_size, 0.0, memory_efficient=memory_efficient, dilation=dilation).double()
    reference = copy.deepcopy(block)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    weight = torch.randn(2, block.out_channels, 9, 11, dtype=torch.float64)
    set_fast_path(reference, False)
    out, grad = _train_step(block, x, weight)
    expected, expected_grad = _train_step(reference, x, weight)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=1e-10)
    reference_params = dict(reference.named_parameters())
    for name, p in block.named_parameters():
        torch.testing.assert_close(p.grad, reference_params[name].grad, atol=1e-10, rtol=1e-10, msg=name)
    reference_buffers = dict(reference.named_buffers())
    for name, buf in block.named_buffers():
        torch.testing.assert_close(buf, reference_buffers[name], atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("bn_size", [4, 0], ids=["bottleneck", "no-bottleneck"])
def test_dilated_block_in_eval_equals_the_module_path(bn_size):
    block = randomize_bn_statistics(DenseBlock(3, 6, 4, bn_size, 0.2, dilation=2)).eval()
    x = torch.randn(2, 6, 9, 11)
    reference = copy.deepcopy(block)
    set_fast_path(reference, False)
    with torch.no_grad():
        out = block(x)
        expected = reference(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_dilated_blocks_train_on_the_module_path_and_evaluate_fused():
    # The equalities above hold whichever path runs: the fused training path covers the 3x3 convs the
    # block builds undilated and steps aside for dilated ones; the eval path calls the conv modules.
    x = torch.randn(2, 6, 9, 11)
    block = DenseBlock(2, 6, 4, 4, 0.0, dilation=2)
    reason = fused_dense_block._step_aside_reason(block.train(), x.requires_grad_())
    assert reason is not None and "dilation" in reason
    with torch.no_grad():
        assert fused_dense_block._step_aside_reason(block.eval(), x.detach()) is None
