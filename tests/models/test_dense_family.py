"""RDNet, VoVNet-V2 and HarDNet backbones: timm parity (weights, logits, features), parameter counts
(timm's, the HarDNet paper's), the feature contract at two input sizes, weight-loading errors,
gradient checkpointing, stage groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import densevision
from densevision.models.backbones import HarDNet, RDNet, VoVNet, remap_timm_rdnet_keys, remap_timm_vovnet_keys
from densevision.models.backbones.hardnet import HarDNetConfig, harmonic_channels, harmonic_links
from densevision.models.weights import WeightsError
from tests.bn import randomize_bn_statistics

# densevision name -> (timm name, key remapping)
TIMM_TWINS = {
    "rdnet_tiny": ("rdnet_tiny", remap_timm_rdnet_keys),
    "rdnet_small": ("rdnet_small", remap_timm_rdnet_keys),
    "rdnet_base": ("rdnet_base", remap_timm_rdnet_keys),
    "rdnet_large": ("rdnet_large", remap_timm_rdnet_keys),
    "vovnet39": ("ese_vovnet39b", remap_timm_vovnet_keys),
    "vovnet57": ("ese_vovnet57b", remap_timm_vovnet_keys),
    "vovnet99": ("ese_vovnet99b", remap_timm_vovnet_keys),
}
HARDNET_PAPER_PARAMS = {"hardnet39ds": 3.5e6, "hardnet68": 17.6e6, "hardnet85": 36.7e6}  # Chao et al. 2019
ALL = [*TIMM_TWINS, *HARDNET_PAPER_PARAMS]
# Built for real (forward passes); the others are only built on the meta device.
FORWARD = ["rdnet_tiny", "vovnet39", "hardnet39ds", "hardnet68"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_rdnet(**overrides) -> RDNet:
    args = dict(growth_rates=(8, 8, 8, 8), downsample=(False, True, True, True),
                ese=(False, False, True, True), layers_per_stage=2, stem_channels=16, num_classes=5)
    return RDNet(**(args | overrides))


def tiny_vovnet(**overrides) -> VoVNet:
    args = dict(modules_per_stage=(1, 1, 2, 1), stem_channels=(8, 8, 16), mid_channels=(8, 8, 8, 8),
                out_channels=(16, 24, 32, 40), layers_per_module=2, num_classes=5)
    return VoVNet(**(args | overrides))


def tiny_hardnet(depthwise: bool = False, **overrides) -> HarDNet:
    config = HarDNetConfig(stem_channels=(8, 16), stage_channels=(16, 24, 32, 40), growth_rates=(4, 4, 6, 8),
                           layers=(2, 4, 2, 2), downsample=(True, True, True, False), depthwise=depthwise)
    return HarDNet(config=config, **({"num_classes": 5} | overrides))


TINY = {"rdnet": tiny_rdnet, "vovnet": tiny_vovnet, "hardnet": tiny_hardnet,
        "hardnet_ds": lambda **kw: tiny_hardnet(True, **kw)}


def test_every_preset_is_registered():
    assert set(ALL) <= set(densevision.list_models())


@pytest.mark.parametrize("name", sorted(TIMM_TWINS))
def test_keys_shapes_and_parameter_count_equal_timm(name):
    timm = pytest.importorskip("timm")
    timm_name, remap = TIMM_TWINS[name]
    with torch.device("meta"):  # nothing allocated: free even for rdnet_large
        theirs = timm.create_model(timm_name)
        ours = densevision.create_model(name)
    assert count_params(ours) == count_params(theirs)
    remapped = {k: tuple(v.shape) for k, v in remap(theirs.state_dict()).items()}
    assert remapped == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    features = [(s.channels, s.stride) for s in ours.feature_info if s.name != "c1"]
    assert features == [(f["num_chs"], f["reduction"]) for f in theirs.feature_info if f["reduction"] > 2]


def _randomize_timm(model: nn.Module) -> nn.Module:
    """Layer scales of ~1 (timm starts them at 1e-6, which would hide the dense layers' maps) and
    non-trivial norm statistics and affine parameters."""
    randomize_bn_statistics(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = p.dim() == 1 and ("norm" in name or ".bn." in name)
            if name.endswith("gamma") or (is_norm and name.endswith("weight")):
                p.uniform_(0.5, 1.5)
            elif is_norm and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("name", ["rdnet_tiny", "vovnet39"])
def test_timm_weights_give_timm_logits_and_features(name, tmp_path):
    timm = pytest.importorskip("timm")
    timm_name, _ = TIMM_TWINS[name]
    theirs = _randomize_timm(timm.create_model(timm_name)).eval()
    path = tmp_path / f"{timm_name}.pth"
    torch.save(theirs.state_dict(), path)
    ours = densevision.create_model(name, weights=str(path)).eval()
    body = densevision.create_model(name, weights=str(path), features_only=True).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = theirs(x)
        assert (ours(x) - expected).abs().max() < 1e-4 * max(1.0, expected.abs().max().item())
        features = body(x)
        intermediates = theirs.forward_intermediates(x, intermediates_only=True)
    assert list(features) == [s.name for s in body.feature_info]
    for got, want in zip(features.values(), intermediates, strict=True):
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("name", sorted(HARDNET_PAPER_PARAMS))
def test_hardnet_parameter_counts_match_the_paper(name):
    with torch.device("meta"):
        count = count_params(densevision.create_model(name))
    # the paper's table rounds to 0.1M
    assert abs(count - HARDNET_PAPER_PARAMS[name]) < 0.05e6


def test_harmonic_links_and_channels():
    # layer l links to l - 2^n for every 2^n dividing l (paper Fig. 3)
    assert [harmonic_links(layer) for layer in range(1, 9)] == [
        [0], [1, 0], [2], [3, 2, 0], [4], [5, 4], [6], [7, 6, 4, 0]
    ]
    # k * m^(links - 1), rounded to even: 10, 10 * 1.7 = 17 -> 18, 10 * 1.7^2 = 28.9 -> 28,
    # 10 * 1.7^3 = 49.1 -> 50
    assert [harmonic_channels(layer, 48, 10, 1.7) for layer in (0, 1, 2, 4, 8)] == [48, 10, 18, 28, 50]


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_feature_contract(name, size):
    body = densevision.create_model(name, features_only=True).eval()
    with torch.no_grad():
        features = body(torch.randn(1, 3, *size))
    assert list(features) == [spec.name for spec in body.feature_info]
    for spec in body.feature_info:
        assert spec.name == f"c{spec.stride.bit_length() - 1}"
        out = features[spec.name]
        assert out.shape[1] == spec.channels
        assert abs(out.shape[2] - size[0] / spec.stride) < 1 and abs(out.shape[3] - size[1] / spec.stride) < 1


def test_published_taps():
    with torch.device("meta"):
        taps = {name: [(s.name, s.channels) for s in densevision.create_model(name, features_only=True)
                       .feature_info] for name in ("rdnet_tiny", "vovnet39", "hardnet68", "hardnet85")}
    assert taps["rdnet_tiny"] == [("c2", 256), ("c3", 440), ("c4", 744), ("c5", 1040)]
    assert taps["vovnet39"] == [("c1", 64), ("c2", 256), ("c3", 512), ("c4", 768), ("c5", 1024)]
    assert taps["hardnet68"] == [("c1", 64), ("c2", 128), ("c3", 320), ("c4", 640), ("c5", 1024)]
    assert taps["hardnet85"] == [("c1", 96), ("c2", 192), ("c3", 320), ("c4", 720), ("c5", 1280)]


@pytest.mark.parametrize("family", sorted(TINY))
def test_out_features_skip_later_stages_and_classifier(family):
    build = TINY[family]
    model = build(features_only=True, out_features=["c3"]).eval()
    calls = []
    last = model.stages[-1]
    last.register_forward_pre_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["c3"] and calls == []
    assert build()(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert build(num_classes=0)(torch.randn(2, 3, 64, 64)).shape == (2, model.num_features)
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['c7'\]"):
        build(features_only=True, out_features=["c7"])


@pytest.mark.parametrize("family", sorted(TINY))
def test_input_checks(family):
    model = TINY[family]()
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="H and W must be at least 32"):
        model(torch.randn(1, 3, 16, 64))


@pytest.mark.parametrize("family", sorted(TINY))
def test_gradient_checkpointing_gives_the_same_gradients(family):
    torch.manual_seed(0)
    plain = TINY[family]()
    checkpointed = TINY[family](memory_efficient=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 48)
    torch.manual_seed(1)
    plain(x).square().sum().backward()
    torch.manual_seed(1)  # the same dropout masks
    checkpointed(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
    for a, b in zip(plain.buffers(), checkpointed.buffers(), strict=True):
        assert torch.equal(a, b)  # running statistics updated once, not twice


@pytest.mark.parametrize("family", sorted(TINY))
def test_weights_round_trip_strictly_with_in_chans_and_new_classes(family, tmp_path):
    build = TINY[family]
    source = build()
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    target = build()
    target.load_weights(path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    gray = build(in_chans=1)
    gray.load_weights(path)
    first = next(k for k in source.state_dict() if k.endswith("weight"))
    assert torch.allclose(gray.state_dict()[first], source.state_dict()[first].sum(1, keepdim=True))
    build(features_only=True).load_weights(path)  # classifier (and RDNet's head norm) dropped
    with pytest.warns(UserWarning, match="classifier has 5 classes, model has 7"):
        build(num_classes=7).load_weights(path)


@pytest.mark.parametrize("family", ["rdnet", "vovnet"])
def test_weight_errors_name_the_problem(family, tmp_path):
    build = TINY[family]
    state = build().state_dict()
    dropped = next(iter(state))
    del state[dropped]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=rf"1 missing key\(s\): {dropped}"):
        build().load_weights(path)
    with pytest.raises(ValueError, match="would need a download, and densevision never downloads"):
        build().load_weights("pretrained")


def test_rdnet_remap_is_the_identity_on_densevision_keys():
    state = tiny_rdnet().state_dict()
    assert list(remap_timm_rdnet_keys(state)) == list(state)
    assert list(remap_timm_vovnet_keys(tiny_vovnet().state_dict())) == list(tiny_vovnet().state_dict())


@pytest.mark.parametrize("family", sorted(TINY))
def test_stage_groups_cover_every_parameter_once(family):
    model = TINY[family](features_only=True)
    groups = model.stage_groups()
    assert len(groups) == 5  # stem + one per stride 4, 8, 16, 32: the 5 trainable stages of a ResNet
    seen = [id(p) for group in groups for module in group for p in module.parameters()]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())


def test_architecture_errors():
    with pytest.raises(ValueError, match="the first stage cannot downsample"):
        tiny_rdnet(downsample=(True, True, True, True))
    with pytest.raises(ValueError, match="VoVNet needs 3 stem_channels and 4 entries"):
        tiny_vovnet(modules_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match=r"unknown HarDNet 'hardnet100'; choose one of \['hardnet39ds'"):
        densevision.models.backbones.hardnet("hardnet100")
