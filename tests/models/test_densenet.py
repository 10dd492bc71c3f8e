"""DenseNet backbone family: registry, parameter counts, torchvision parity, weights, features."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import densevision
from densevision.models.backbones.densenet import DenseNet, remap_torchvision_densenet_keys
from densevision.models.weights import WeightsError

IMAGENET = ["densenet121", "densenet161", "densenet169", "densenet201", "densenet264"]
CIFAR_PAPER_PARAMS = {  # Huang et al. 2017, Table 2
    "densenet40_k12": 1.0e6,
    "densenet100_k12": 7.0e6,
    "densenet100_k24": 27.2e6,
    "densenet_bc100_k12": 0.8e6,
    "densenet_bc250_k24": 15.3e6,
    "densenet_bc190_k40": 25.6e6,
}
TORCHVISION_PARAMS = {
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models_has_every_backbone_preset():
    names = densevision.list_models("densenet*")
    assert set(IMAGENET) | set(CIFAR_PAPER_PARAMS) <= set(names)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'densenet12'.*densenet121"):
        densevision.create_model("densenet12")


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_imagenet_parameter_counts_equal_torchvision(name):
    model = densevision.create_model(name)
    assert count_params(model) == TORCHVISION_PARAMS[name]
    assert count_params(model) == count_params(getattr(torchvision.models, name)())


@pytest.mark.parametrize("name", sorted(CIFAR_PAPER_PARAMS))
def test_cifar_parameter_counts_match_paper(name):
    count = count_params(densevision.create_model(name))
    # Within 3%, or within the paper's rounding to 0.1M: BC-100 k=12 has 769,162 parameters with 10
    # classes (800,032 with CIFAR-100's classifier, the paper's "0.8M").
    assert abs(count - CIFAR_PAPER_PARAMS[name]) <= max(0.03 * CIFAR_PAPER_PARAMS[name], 0.05e6)


def test_densenet_bc100_k12_with_100_classes_is_the_papers_0_8m():
    assert count_params(densevision.create_model("densenet_bc100_k12", num_classes=100)) == 800_032


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_forward(name):
    model = densevision.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize("name", sorted(CIFAR_PAPER_PARAMS))
def test_cifar_forward_backward(name):
    model = densevision.create_model(name)
    if count_params(model) > 5e6:
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        return
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _torchvision_weights(tmp_path, name="densenet121", legacy=False):
    reference = getattr(torchvision.models, name)().eval()
    for m in reference.modules():  # non-trivial BN statistics make the parity check meaningful
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = reference.state_dict()
    if legacy:  # as saved by torchvision < 0.3: old key names, no BatchNorm batch counters
        state = {_to_legacy(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return reference, path


def _to_legacy(key: str) -> str:
    for old, new in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2")):
        if "denselayer" in key and f".{old}." in key:
            return key.replace(f".{old}.", f".{new}.")
    return key


@pytest.mark.parametrize("legacy", [False, True], ids=["current-keys", "legacy-keys"])
def test_torchvision_weights_give_torchvision_outputs(tmp_path, legacy):
    reference, path = _torchvision_weights(tmp_path, legacy=legacy)
    model = densevision.create_model("densenet121", weights=path).eval()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() < 1e-4


def test_legacy_key_remap_renames_only_dense_layer_keys():
    state = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.norm0.weight": 2}
    assert remap_torchvision_densenet_keys(state) == {
        "features.denseblock1.denselayer1.norm1.weight": 1,
        "features.norm0.weight": 2,
    }


def test_densevision_state_dict_is_torchvision_state_dict():
    ours = densevision.create_model("densenet121")
    theirs = torchvision.models.densenet121()
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_single_channel_weights_sum_rgb_filters(tmp_path):
    reference, path = _torchvision_weights(tmp_path)
    gray_model = densevision.create_model("densenet121", weights=path, in_chans=1).eval()
    gray = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert (gray_model(gray) - reference(gray.expand(-1, 3, -1, -1))).abs().max() < 1e-4


def test_four_channel_weights_adapt_first_conv(tmp_path):
    reference, path = _torchvision_weights(tmp_path)
    with pytest.warns(UserWarning, match="classifier has 1000 classes, model has 5"):
        model = densevision.create_model("densenet121", weights=path, in_chans=4, num_classes=5).eval()
    weight = reference.features.conv0.weight
    torch.testing.assert_close(model.features.conv0.weight, torch.cat([weight, weight[:, :1]], 1) * 0.75)
    with torch.no_grad():
        assert model(torch.rand(1, 4, 64, 64)).shape == (1, 5)


def test_features_only_model_loads_classifier_free(tmp_path):
    reference, path = _torchvision_weights(tmp_path)
    model = densevision.create_model("densenet121", weights=path, features_only=True).eval()
    with torch.no_grad():
        pooled = reference.features(torch.ones(1, 3, 64, 64))
        ours = model(torch.ones(1, 3, 64, 64))["c5"]
    assert (ours - torch.relu(pooled)).abs().max() < 1e-4


def test_weights_missing_keys_are_named(tmp_path):
    state = torchvision.models.densenet121().state_dict()
    del state["features.denseblock2.denselayer3.conv1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): features.denseblock2.denselayer3.conv1"):
        densevision.create_model("densenet121", weights=tmp_path / "partial.pth")


def test_weights_unexpected_and_mismatched_keys_are_named(tmp_path):
    state = torchvision.models.densenet169().state_dict()
    torch.save(state, tmp_path / "densenet169.pth")
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): features.denseblock3.denselayer25"):
        densevision.create_model("densenet121", weights=tmp_path / "densenet169.pth")
    state = torchvision.models.densenet161().state_dict()
    torch.save(state, tmp_path / "densenet161.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch.*features.conv0.weight: file \(96, 3, 7, 7\)"):
        densevision.create_model("densenet121", weights=tmp_path / "densenet161.pth")


def test_weights_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match="notes.pth: not a PyTorch checkpoint"):
        densevision.create_model("densenet121", weights=path)
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="meta.pth: holds no state dict"):
        densevision.create_model("densenet121", weights=tmp_path / "meta.pth")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="evil.pth: refused to load"):
        densevision.create_model("densenet121", weights=tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_weights_file_and_download_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        densevision.create_model("densenet121", weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="never downloads.*weights='densenet121.pth'"):
        densevision.create_model("densenet121", weights="DEFAULT")


IMAGENET_FEATURES = [("c1", 64, 2), ("c2", 256, 4), ("c3", 512, 8), ("c4", 1024, 16), ("c5", 1024, 32)]


def _assert_features_match_info(model, x):
    with torch.no_grad():
        feats = model(x)
    assert list(feats) == [spec.name for spec in model.feature_info]
    for spec, (name, tensor) in zip(model.feature_info, feats.items(), strict=True):
        assert tensor.shape[:2] == (x.shape[0], spec.channels), name
        for size, got in zip(x.shape[-2:], tensor.shape[-2:], strict=True):
            assert abs(got - size / spec.stride) <= 1, (name, got, size, spec.stride)


@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_densenet121_feature_contract(size):
    model = densevision.create_model("densenet121", features_only=True).eval()
    assert [(s.name, s.channels, s.stride) for s in model.feature_info] == IMAGENET_FEATURES
    _assert_features_match_info(model, torch.randn(1, 3, *size))


@pytest.mark.parametrize("name", IMAGENET[1:] + sorted(CIFAR_PAPER_PARAMS)[:2])
@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_feature_contract_for_other_presets(name, size):
    model = densevision.create_model(name, features_only=True).eval()
    _assert_features_match_info(model, torch.randn(1, 3, *size))


def test_cifar_features_start_at_stride_one():
    model = densevision.create_model("densenet_bc100_k12", features_only=True)
    assert [(s.name, s.stride) for s in model.feature_info] == [("c0", 1), ("c1", 2), ("c2", 4)]


def test_out_features_selects_and_skips_later_stages():
    model = densevision.create_model("densenet121", features_only=True, out_features=["c3", "c2"]).eval()
    assert [s.name for s in model.feature_info] == ["c2", "c3"]
    block4 = model.features.denseblock4
    calls = []
    block4.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        assert list(model(torch.randn(1, 3, 64, 64))) == ["c2", "c3"]
    assert not calls
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['p3'\].*\['c1', 'c2'"):
        densevision.create_model("densenet121", features_only=True, out_features=["p3"])


def test_bad_inputs_are_clear_errors():
    model = densevision.create_model("densenet121").eval()
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(16, 64\) is smaller.*at least 32"):
        model(torch.randn(1, 3, 16, 64))


def _tiny_densenet(**kwargs) -> DenseNet:
    return DenseNet(growth_rate=8, block_config=(3, 3), stem_channels=16, num_classes=5, **kwargs)


@pytest.mark.parametrize("bn_size", [4, 0], ids=["bottleneck", "plain-layers"])
def test_memory_efficient_gives_same_outputs_and_gradients(bn_size):
    plain = _tiny_densenet(bn_size=bn_size)
    efficient = _tiny_densenet(bn_size=bn_size, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 40)
    out_plain, out_efficient = plain(x), efficient(x)
    torch.testing.assert_close(out_efficient, out_plain)
    out_plain.square().sum().backward()
    out_efficient.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, b), c in zip(plain.named_buffers(), efficient.buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=name)  # BN running stats updated once, not twice


def test_architecture_arguments_are_validated():
    with pytest.raises(ValueError, match="compression must be in"):
        DenseNet(compression=0)
    with pytest.raises(ValueError, match=r"CIFAR depth must be 6n\+4"):
        densevision.models.backbones.cifar_densenet(101, 12, bottleneck=True)
