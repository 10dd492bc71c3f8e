"""One backbone contract for every family, presets as literal registrations, one weight loader, one
detector factory: the registered names, the base every preset implements, the loader's arguments and the
source-level rules (no ``**locals()``, no ``globals()`` writes, no ``isinstance`` on a family outside its
own file)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import densevision
from densevision.models.backbones import DenseNet
from densevision.models.features import FeatureBackbone
from densevision.models.layers import set_fast_path
from densevision.models.weights import WeightsError, load_backbone_weights

PACKAGE = Path(densevision.__file__).parent
# list_models() of the backbone and detector families before presets became literal registrations
FAMILY_NAMES = [
    "densenet100_k12", "densenet100_k24", "densenet121", "densenet161", "densenet169", "densenet201",
    "densenet264", "densenet40_k12", "densenet_bc100_k12", "densenet_bc190_k40", "densenet_bc250_k24",
    "fasterrcnn_densenet121_fpn", "fasterrcnn_densenet161_fpn", "fasterrcnn_densenet169_fpn",
    "fasterrcnn_densenet201_fpn", "fasterrcnn_densenet_tiny_fpn", "fasterrcnn_hardnet39ds_fpn",
    "fasterrcnn_hardnet68_fpn", "fasterrcnn_rdnet_tiny_fpn", "fasterrcnn_vovnet39_fpn",
    "fcos_densenet121_fpn", "fcos_densenet161_fpn", "fcos_densenet169_fpn", "fcos_densenet201_fpn",
    "fcos_densenet_tiny_fpn", "fcos_hardnet39ds_fpn", "fcos_hardnet68_fpn", "fcos_rdnet_tiny_fpn",
    "fcos_vovnet39_fpn", "hardnet39ds", "hardnet68", "hardnet85", "maskrcnn_densenet121_fpn",
    "maskrcnn_densenet161_fpn", "maskrcnn_densenet169_fpn", "maskrcnn_densenet201_fpn",
    "maskrcnn_densenet_tiny_fpn", "maskrcnn_hardnet39ds_fpn", "maskrcnn_hardnet68_fpn",
    "maskrcnn_rdnet_tiny_fpn", "maskrcnn_vovnet39_fpn", "rdnet_base", "rdnet_large", "rdnet_small",
    "rdnet_tiny", "retinanet_densenet121_fpn", "retinanet_densenet161_fpn", "retinanet_densenet169_fpn",
    "retinanet_densenet201_fpn", "retinanet_densenet_tiny_fpn", "retinanet_hardnet39ds_fpn",
    "retinanet_hardnet68_fpn", "retinanet_rdnet_tiny_fpn", "retinanet_vovnet39_fpn", "vovnet39",
    "vovnet57", "vovnet99",
]  # fmt: skip
# by import path: the package re-exports the builders hardnet, rdnet and vovnet under the modules' names
PRESET_MODULES = [
    importlib.import_module(f"densevision.models.{name}")
    for name in ("backbones.densenet", "backbones.rdnet", "backbones.vovnet", "backbones.hardnet",
                 "detection.densenet_fpn", "detection.family_fpn")
]  # fmt: skip
BACKBONES = [name for name in FAMILY_NAMES if not name.endswith("_fpn")]
FAMILY_FILES = {"DenseNet": "densenet.py", "RDNet": "rdnet.py", "VoVNet": "vovnet.py",
                "HarDNet": "hardnet.py"}  # fmt: skip
FAMILY_PATTERN = r"(densenet|rdnet|vovnet|hardnet).*|(fasterrcnn|maskrcnn|retinanet|fcos)_.*_fpn"


def _family_names() -> list[str]:
    return [name for name in densevision.list_models() if re.fullmatch(FAMILY_PATTERN, name)]


def test_registered_family_names_are_unchanged():
    assert _family_names() == FAMILY_NAMES


def test_every_preset_is_a_literal_definition_in_its_module():
    sources = "\n".join(inspect.getsource(module) for module in PRESET_MODULES)
    for name in FAMILY_NAMES:
        # registered by the decorator, declared with its own literal name (``preset`` registers too)
        assert re.search(rf"^@(register_model|preset\(.*\))\ndef {name}\(", sources, re.MULTILINE), name
    for module in PRESET_MODULES:
        source = inspect.getsource(module)
        assert "locals()" not in source and "globals()" not in source, module.__name__


def test_no_isinstance_on_a_family_outside_its_own_file():
    pattern = re.compile(r"isinstance\([^)]*\b(" + "|".join(FAMILY_FILES) + r")\b")
    for path in PACKAGE.rglob("*.py"):
        for match in pattern.finditer(path.read_text()):
            assert path.name == FAMILY_FILES[match.group(1)], f"{path}: {match.group(0)}"


def test_shared_backbone_code_imports_no_family_file():
    for module in ("features.py", "weights.py", "backbones/common.py"):
        source = (PACKAGE / "models" / module).read_text()
        assert not re.search(r"backbones\.(densenet|rdnet|vovnet|hardnet)\b", source), module


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_preset_implements_the_contract(name):
    with torch.device("meta"):
        model = densevision.create_model(name, features_only=True)
    assert isinstance(model, FeatureBackbone) and model.features_only and model.classifier is None
    specs = model.feature_info
    assert [s.name for s in specs] == [f"c{s.stride.bit_length() - 1}" for s in specs]
    assert [s.stride for s in specs] == sorted(s.stride for s in specs)
    assert model.num_features == specs[-1].channels and model.min_input_size == specs[-1].stride
    groups = model.stage_groups()
    seen = [id(p) for group in groups for module in group for p in module.parameters()]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every parameter in one stage


def _tiny_densenet(**kwargs) -> DenseNet:
    return DenseNet(growth_rate=4, block_config=(2, 2), stem_channels=8, num_classes=3, **kwargs)


def _saved_tensor_count(model: nn.Module) -> int:
    count = 0

    def pack(tensor):
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    return count


def test_densenet_set_grad_checkpointing_is_the_memory_efficient_option():
    # the module path: the fused CPU blocks keep less whatever the option
    model = set_fast_path(_tiny_densenet(), False)
    stored = _saved_tensor_count(model)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    built = set_fast_path(_tiny_densenet(memory_efficient=True), False)
    assert _saved_tensor_count(model) == _saved_tensor_count(built) < stored  # concatenations recomputed


def test_loader_takes_the_family_remap_and_first_conv_as_arguments(tmp_path):
    source = _tiny_densenet()
    path = tmp_path / "renamed.pth"
    torch.save({f"body.{k}": v for k, v in source.state_dict().items()}, path)
    gray = _tiny_densenet(in_chans=1)
    load_backbone_weights(
        gray, path, remap=lambda state: {k.removeprefix("body."): v for k, v in state.items()},
        first_conv="features.conv0.weight",
    )
    conv0 = source.state_dict()["features.conv0.weight"]
    torch.testing.assert_close(gray.features.conv0.weight, conv0.sum(1, keepdim=True))
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): body\.features"):
        load_backbone_weights(_tiny_densenet(), path)


def test_safetensors_weights_load(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    source = _tiny_densenet()
    path = tmp_path / "tiny.safetensors"
    safetensors.save_file(source.state_dict(), path)
    target = _tiny_densenet()
    target.load_weights(path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="junk.safetensors: not a valid safetensors file"):
        target.load_weights(tmp_path / "junk.safetensors")


def test_presets_are_yaml_class_paths_that_refuse_typos():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    config = parser.parse_string(
        "model:\n  class_path: densevision.models.backbones.rdnet.rdnet_tiny\n"
        "  init_args: {features_only: true, out_features: [c2, c3]}\n"
    )
    with torch.device("meta"):
        model = parser.instantiate(config).model
    assert [s.name for s in model.feature_info] == ["c2", "c3"]
    with pytest.raises(jsonargparse.ArgumentError, match="features_onl"):
        parser.parse_string(
            "model:\n  class_path: densevision.models.backbones.densenet.densenet121\n"
            "  init_args: {features_onl: true}\n"
        )
