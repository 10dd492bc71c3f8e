"""FC-DenseNet (Tiramisu) and the Tiramisu decoder on DenseNet backbones: shapes, counts, weights, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import densevision
from densevision.models.backbones.densenet import DenseNet
from densevision.models.features import FeatureSpec
from densevision.models.segmentation import FCDenseNet, TiramisuDecoder, TiramisuSegmenter
from densevision.models.segmentation.decoder import fit_to_size

FCDENSENET_PARAMS = {"fcdensenet56": 1_375_019, "fcdensenet67": 3_460_475, "fcdensenet103": 9_318_075}
PAPER_PARAMS = {"fcdensenet56": 1.5e6, "fcdensenet67": 3.5e6, "fcdensenet103": 9.4e6}
TIRAMISU_DENSENETS = [f"tiramisu_densenet{d}" for d in (121, 161, 169, 201, 264)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_fcdensenet(**options) -> FCDenseNet:
    arch = dict(num_classes=5, growth_rate=4, down_blocks=(2, 2), bottleneck_layers=2, stem_channels=8)
    return FCDenseNet(**(arch | options))


def test_every_preset_is_registered():
    assert set(FCDENSENET_PARAMS) | set(TIRAMISU_DENSENETS) <= set(densevision.list_models())


@pytest.mark.parametrize("name", sorted(FCDENSENET_PARAMS))
def test_fcdensenet_parameter_counts(name):
    count = count_params(densevision.create_model(name))
    assert count == FCDENSENET_PARAMS[name]
    assert abs(count - PAPER_PARAMS[name]) <= 0.1 * PAPER_PARAMS[name]


def test_fcdensenet103_layer_count_is_103():
    model = densevision.create_model("fcdensenet103")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    transitions_up = [m for m in convs if isinstance(m, nn.ConvTranspose2d)]
    # The paper's count: first conv, 38 + 15 + 38 dense layers, 5 transitions down, 5 up, classifier.
    assert len(convs) == 103
    assert len(transitions_up) == 5


def test_fcdensenet_up_path_follows_the_paper():
    model = densevision.create_model("fcdensenet103")
    steps = model.decoder.steps
    # Transition up keeps the channels of the previous block's new maps: 15 * 16 from the bottleneck.
    assert [s.transition_up.in_channels for s in steps] == [240, 192, 160, 112, 80]
    assert [len(s.block) for s in steps] == [12, 10, 7, 5, 4]
    # The last block keeps its full stack: 80 upsampled + 48 + 16 * 4 skip + 4 * 16 new maps.
    assert model.classifier.in_channels == 80 + 112 + 64 == 256


@pytest.mark.parametrize(
    ("name", "size"), [("fcdensenet56", (64, 64)), ("fcdensenet56", (45, 67)), ("fcdensenet67", (37, 41))]
)
def test_fcdensenet_logits_have_the_input_size(name, size):
    model = densevision.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 7, *size)


def test_fcdensenet103_forward_at_odd_size():
    model = densevision.create_model("fcdensenet103").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert out.shape == (1, 11, 33, 47)
    assert torch.isfinite(out).all()


def test_fcdensenet_at_camvid_odd_size_361x479():
    model = tiny_fcdensenet(down_blocks=(1,) * 5, bottleneck_layers=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 361, 479)).shape == (1, 5, 361, 479)


@pytest.mark.parametrize("size", [(64, 64), (65, 67)])
def test_stem_stride_2_halves_every_feature_and_returns_full_size_logits(size):
    plain = densevision.create_model("fcdensenet56", num_classes=3)
    model = densevision.create_model("fcdensenet56", stem_stride=2, num_classes=3).eval()
    assert [s.stride for s in model.encoder.feature_info] == [2, 4, 8, 16, 32, 64]
    assert count_params(model) == count_params(plain)
    assert model.min_input_size == 64
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_up_blocks_default_to_the_mirror_and_can_be_set():
    model = tiny_fcdensenet(down_blocks=(2, 3), up_blocks=(1, 4))
    assert [len(s.block) for s in model.decoder.steps] == [1, 4]
    assert [len(s.block) for s in tiny_fcdensenet(down_blocks=(2, 3)).decoder.steps] == [3, 2]
    with pytest.raises(ValueError, match=r"up_blocks.*down_blocks=\(2, 3\), up_blocks=\(1,\)"):
        tiny_fcdensenet(down_blocks=(2, 3), up_blocks=(1,))


@pytest.mark.parametrize("drop_rate", [0.0, 0.2])
def test_memory_efficient_gives_the_same_outputs_and_gradients(drop_rate):
    """Recomputed dense layers and transitions replay the same dropout masks (same seed, same stream)."""
    plain = tiny_fcdensenet(drop_rate=drop_rate)
    efficient = tiny_fcdensenet(drop_rate=drop_rate, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 19, 23)
    outputs, grads = [], []
    for model in (plain, efficient):
        model.train()
        torch.manual_seed(3)
        out = model(x)
        out.square().mean().backward()
        outputs.append(out)
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1])
    for g_plain, g_efficient in zip(*grads, strict=True):
        torch.testing.assert_close(g_plain, g_efficient)
    # Recomputation must not update BatchNorm statistics twice.
    torch.testing.assert_close(plain.state_dict(), efficient.state_dict())


def test_wrong_channel_count_is_a_clear_error():
    model = densevision.create_model("fcdensenet56", in_chans=4)
    expected = r"FCDenseNet expects images of shape \(N, 4, H, W\), got \(1, 3, 64, 64\); set in_chans"
    with pytest.raises(ValueError, match=expected):
        model(torch.randn(1, 3, 64, 64))


def test_too_small_input_is_a_clear_error():
    model = densevision.create_model("fcdensenet56")
    with pytest.raises(ValueError, match=r"FCDenseNet: input \(31, 64\).*at least 32"):
        model(torch.randn(1, 3, 31, 64))


def test_tiramisu_densenet121_forward_at_odd_size():
    model = densevision.create_model("tiramisu_densenet121", num_classes=4).eval()
    assert [s.stride for s in model.backbone.feature_info] == [2, 4, 8, 16, 32]
    assert len(model.decoder.steps) == 5  # c4, c3, c2, c1, then full resolution
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 35)).shape == (1, 4, 33, 35)


def test_tiramisu_densenet121_loads_local_torchvision_weights(tmp_path):
    reference = torchvision.models.densenet121()
    path = tmp_path / "densenet121.pth"
    torch.save(reference.state_dict(), path)
    model = densevision.create_model("tiramisu_densenet121", weights=str(path))
    torch.testing.assert_close(model.backbone.features.conv0.weight, reference.features.conv0.weight)
    last = model.backbone.features.denseblock4.denselayer16.conv2.weight
    torch.testing.assert_close(last, reference.features.denseblock4.denselayer16.conv2.weight)


def test_tiramisu_densenet_rejects_download_names():
    with pytest.raises(ValueError, match="never downloads"):
        densevision.create_model("tiramisu_densenet121", weights="imagenet")


def test_tiramisu_segmenter_wrong_channels_names_the_model():
    model = densevision.create_model("tiramisu_densenet121", in_chans=1)
    with pytest.raises(ValueError, match=r"TiramisuSegmenter expects images of shape \(N, 1, H, W\)"):
        model(torch.randn(1, 3, 64, 64))


def test_decoder_is_built_from_a_cifar_densenet_feature_info():
    backbone = densevision.create_model("densenet40_k12", features_only=True)
    assert [s.stride for s in backbone.feature_info] == [1, 2, 4]  # no step past the skips
    model = TiramisuSegmenter(backbone=backbone, num_classes=3, decoder_layers=(2, 3, 1), growth_rate=4)
    skips = backbone.feature_info[:-1][::-1]
    for step, spec in zip(model.decoder.steps, skips, strict=True):  # skip channels read from feature_info
        assert step.block.in_channels == step.transition_up.out_channels + spec.channels
    assert model.bottleneck.in_channels == backbone.feature_info[-1].channels
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 19, 23)).shape == (2, 3, 19, 23)


def test_segmenter_decoder_layers_length_is_checked():
    backbone = DenseNet(growth_rate=4, block_config=(1, 1), stem="cifar", stem_channels=8, features_only=True)
    with pytest.raises(ValueError, match=r"decoder_layers needs 2 entries.*got \(1, 1, 1\)"):
        TiramisuSegmenter(backbone=backbone, num_classes=2, decoder_layers=(1, 1, 1))


def test_decoder_rejects_missing_strides():
    info = [FeatureSpec("c1", 8, 2), FeatureSpec("c3", 16, 8)]
    with pytest.raises(ValueError, match="consecutive strides"):
        TiramisuDecoder(feature_info=info, in_channels=4, up_layers=(1, 1))


@pytest.mark.parametrize(
    ("output_stride", "up_layers", "match"),
    [
        (3, (1, 1), "output_stride must be a power of two <= the shallowest feature's stride 4, got 3"),
        (8, (1,), "output_stride must be a power of two"),
        (1, (1, 1), r"up_layers needs 3 positive layer counts .*\['c2'\] plus 2 to reach output_stride=1"),
        (2, (1, 0), "up_layers needs 2 positive layer counts"),
    ],
)
def test_decoder_checks_output_stride_and_up_layers(output_stride, up_layers, match):
    info = [FeatureSpec("c2", 8, 4), FeatureSpec("c3", 16, 8)]
    with pytest.raises(ValueError, match=match):
        TiramisuDecoder(feature_info=info, in_channels=4, up_layers=up_layers, output_stride=output_stride)


def test_decoder_output_at_output_stride():
    info = [FeatureSpec("c2", 8, 4), FeatureSpec("c3", 16, 8)]
    decoder = TiramisuDecoder(feature_info=info, in_channels=4, up_layers=(1, 2, 3), growth_rate=2)
    features = {"c2": torch.randn(1, 8, 13, 9), "c3": torch.randn(1, 16, 6, 4)}
    out = decoder(torch.randn(1, 4, 6, 4), features, image_size=(50, 35))
    # Stride 4 -> 2 -> 1 without skips: the last step lands exactly on the image size.
    assert out.shape == (1, decoder.out_channels, 50, 35)
    assert decoder.out_channels == 2 * 2 + 3 * 2  # upsampled new maps of the previous step + its own


@pytest.mark.parametrize(("size", "target"), [((9, 11), (8, 10)), ((9, 11), (10, 13)), ((5, 5), (4, 7))])
def test_fit_to_size_crops_centre_or_pads(size, target):
    x = torch.arange(size[0] * size[1], dtype=torch.float32).reshape(1, 1, *size)
    out = fit_to_size(x, target)
    assert out.shape[-2:] == target
    # The kept centre is unchanged and sits in the middle.
    rows, cols = min(size[0], target[0]), min(size[1], target[1])
    inner_x = fit_to_size(x, (rows, cols))
    inner_out = fit_to_size(out, (rows, cols))
    torch.testing.assert_close(inner_x, inner_out)
    assert out.sum() == inner_x.sum()  # padding is zeros
