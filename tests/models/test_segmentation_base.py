"""The one segmentation base under every segmenter, its presets as data, and the fused dense block's one
dispatch point: contracts parametrised over every segmentation preset."""

from __future__ import annotations

import ast
import copy
import inspect
import typing
from pathlib import Path

import jsonargparse
import pytest
import torch
from torch import nn

import densevision
from densevision.models import fused_dense_block, segmentation
from densevision.models.layers import DenseBlock, set_fast_path
from densevision.models.segmentation import base
from densevision.models.segmentation.base import SegmentationModel, check_input, resize_logits

MODELS_DIR = Path(densevision.__file__).parent / "models"

# Every name densevision registered before presets became data (list_models() of main at e1b1c3a).
REGISTERED = set(
    """
    deeplabv3plus_densenet121 deeplabv3plus_densenet161 denseaspp_densenet121 denseaspp_densenet161
    denseaspp_densenet169 denseaspp_densenet201 densenet100_k12 densenet100_k24 densenet121 densenet161
    densenet169 densenet201 densenet264 densenet40_k12 densenet_bc100_k12 densenet_bc190_k40
    densenet_bc250_k24 fasterrcnn_densenet121_fpn fasterrcnn_densenet161_fpn fasterrcnn_densenet169_fpn
    fasterrcnn_densenet201_fpn fasterrcnn_densenet_tiny_fpn fasterrcnn_hardnet39ds_fpn
    fasterrcnn_hardnet68_fpn fasterrcnn_rdnet_tiny_fpn fasterrcnn_vovnet39_fpn fcdensenet103 fcdensenet56
    fcdensenet67 fchardnet70 fcos_densenet121_fpn fcos_densenet161_fpn fcos_densenet169_fpn
    fcos_densenet201_fpn fcos_densenet_tiny_fpn fcos_hardnet39ds_fpn fcos_hardnet68_fpn fcos_rdnet_tiny_fpn
    fcos_vovnet39_fpn hardnet39ds hardnet68 hardnet85 maskrcnn_densenet121_fpn maskrcnn_densenet161_fpn
    maskrcnn_densenet169_fpn maskrcnn_densenet201_fpn maskrcnn_densenet_tiny_fpn maskrcnn_hardnet39ds_fpn
    maskrcnn_hardnet68_fpn maskrcnn_rdnet_tiny_fpn maskrcnn_vovnet39_fpn rdnet_base rdnet_large rdnet_small
    rdnet_tiny retinanet_densenet121_fpn retinanet_densenet161_fpn retinanet_densenet169_fpn
    retinanet_densenet201_fpn retinanet_densenet_tiny_fpn retinanet_hardnet39ds_fpn retinanet_hardnet68_fpn
    retinanet_rdnet_tiny_fpn retinanet_vovnet39_fpn tiramisu_densenet121 tiramisu_densenet161
    tiramisu_densenet169 tiramisu_densenet201 tiramisu_densenet264 tiramisu_hardnet68 tiramisu_rdnet_tiny
    tiramisu_vovnet39 vovnet39 vovnet57 vovnet99
    """.split()
)

# The keywords each segmentation preset took before (explicit signatures then), with the defaults that
# differ between them.
_FCDENSENET = {"num_classes", "in_chans", "drop_rate", "stem_stride", "memory_efficient", "norm_layer"}
_BACKBONE = {"num_classes", "weights", "in_chans", "memory_efficient", "norm_layer"}
_TIRAMISU = _BACKBONE | {"decoder_layers", "growth_rate", "drop_rate"}
_FAMILY = {"num_classes", "weights", "in_chans", "growth_rate", "drop_rate", "memory_efficient"}
SEGMENTATION_PRESETS = {
    **dict.fromkeys(["fcdensenet56", "fcdensenet67", "fcdensenet103"], _FCDENSENET),
    **{f"tiramisu_densenet{d}": _TIRAMISU for d in (121, 161, 169, 201, 264)},
    **{f"denseaspp_densenet{d}": _BACKBONE | {"output_stride", "drop_rate"} for d in (121, 161, 169, 201)},
    **{f"deeplabv3plus_densenet{d}": _BACKBONE | {"output_stride"} for d in (121, 161)},
    "fchardnet70": {"num_classes", "in_chans", "norm_layer"},
    "tiramisu_rdnet_tiny": _FAMILY,
    "tiramisu_vovnet39": _FAMILY | {"norm_layer"},
    "tiramisu_hardnet68": _FAMILY | {"norm_layer"},
}
DEFAULT_CLASSES = {name: 19 if name == "fchardnet70" else 11 for name in SEGMENTATION_PRESETS}


def accepted_keywords(preset) -> set[str]:
    """The keyword names a preset takes: its own parameters and the keys of its typed ``**options``."""
    names = set()
    for param in inspect.signature(preset).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            (options,) = typing.get_args(typing.get_type_hints(preset)[param.name])
            names |= set(typing.get_type_hints(options))
        else:
            names.add(param.name)
    return names


def test_every_registered_name_is_kept_and_the_segmentation_presets_are_exactly_these():
    assert REGISTERED <= set(densevision.list_models())
    assert set(densevision.list_models()) & set(segmentation.__all__) == set(SEGMENTATION_PRESETS)


@pytest.mark.parametrize("name", sorted(SEGMENTATION_PRESETS))
def test_preset_is_written_out_and_takes_the_keywords_it_took(name):
    preset = getattr(segmentation, name)
    # inspect.unwrap: a registry.preset declaration, whose body the decorator supplies
    source = Path(inspect.getsourcefile(inspect.unwrap(preset))).read_text()
    assert f"def {name}(" in source  # a name grep and tools can follow, not a globals() write
    assert accepted_keywords(preset) == SEGMENTATION_PRESETS[name]
    assert inspect.signature(preset).parameters["num_classes"].default == DEFAULT_CLASSES[name]


def test_no_preset_factory_writes_globals_or_passes_locals_on():
    for path in (MODELS_DIR / "segmentation").glob("*.py"):
        source = path.read_text()
        assert "globals()" not in source and "locals()" not in source, path.name


@pytest.mark.parametrize("name", sorted(SEGMENTATION_PRESETS))
def test_segmentation_contract(name):
    """Every preset is a SegmentationModel returning (N, num_classes, H, W) at two input sizes, one not a
    multiple of 32, and refuses a smaller input naming itself."""
    model = densevision.create_model(name, num_classes=3).eval()
    assert isinstance(model, SegmentationModel)
    assert model.num_classes == 3
    m = model.min_input_size
    with torch.no_grad():
        for size in ((m, 2 * m), (m + 5, m + 3)):
            logits = model(torch.randn(1, 3, *size))
            assert logits.shape == (1, 3, *size)
            assert torch.isfinite(logits).all()
        with pytest.raises(ValueError, match=rf"{type(model).__name__}: input \({m - 1}, {m}\) is smaller"):
            model(torch.randn(1, 3, m - 1, m))
        with pytest.raises(ValueError, match=rf"{type(model).__name__} expects images of shape \(N, 3, H"):
            model(torch.randn(1, 4, m, m))


TINY = {
    "FCDenseNet": lambda: segmentation.FCDenseNet(num_classes=2, growth_rate=4, down_blocks=(1, 1),
                                                  bottleneck_layers=1, stem_channels=8, stem_stride=2),
    "FCHarDNet": lambda: segmentation.FCHarDNet(num_classes=2, stem_channels=(4, 4, 4, 8),
                                                stage_channels=(8, 8, 16), growth_rates=(2, 2, 4),
                                                layers=(1, 1, 2)),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(TINY))
def test_forward_is_encode_decode_classifier_resize_and_trains(kind):
    model = TINY[kind]().train()
    x = torch.randn(2, 3, 37, 45)
    logits = model(x)
    assert logits.shape == (2, 2, 37, 45)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        maps = model.decode(model.encode(x), x.shape[-2:])
        expected = resize_logits(model.classifier(maps), x.shape[-2:], align_corners=model.align_corners)
        assert torch.equal(model(x), expected)
    assert model.align_corners == (kind == "FCHarDNet")  # the reference FC-HarDNet's weights assume it


def test_base_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        densevision.create_model("fcdensenet56", num_classes=0)

    class Unfinished(SegmentationModel):
        def __init__(self) -> None:
            super().__init__(num_classes=2)
            self.classifier = nn.Conv2d(3, 2, 1)

    with pytest.raises(NotImplementedError, match="Unfinished must implement encode"):
        Unfinished()(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"needs H, W >= 32 \(its total stride\), got \(1, 3, 16, 40\); pad"):
        check_input(nn.Identity(), torch.randn(1, 3, 16, 40), None, 32)


def test_resize_logits_keeps_its_import_paths():
    from densevision.models.segmentation.decoder import resize_logits as from_decoder

    assert from_decoder is base.resize_logits
    logits = torch.randn(1, 2, 4, 4)
    assert resize_logits(logits, (4, 4)) is logits
    corners = resize_logits(logits, (7, 7), align_corners=True)
    torch.testing.assert_close(corners[..., ::2, ::2], logits)  # align_corners keeps the corner samples


def _parser() -> jsonargparse.ArgumentParser:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "model")
    return parser


def test_a_preset_in_a_config_takes_its_typed_options():
    # num_classes stays a parameter of its own: the CLI links the data module's into it (a link cannot
    # target a typed **options key); every config in configs/ runs end to end in test_every_config_*.
    model = {"class_path": "densevision.models.segmentation.tiramisu.fcdensenet56",
             "init_args": {"num_classes": 4, "drop_rate": 0.1, "stem_stride": 2}}  # fmt: skip
    parser = _parser()
    built = parser.instantiate(parser.parse_object({"model": model})).model
    assert isinstance(built, segmentation.FCDenseNet)
    assert built.num_classes == 4 and built.min_input_size == 64  # stem_stride 2: one more halving


def test_a_typo_in_a_preset_option_fails_when_the_config_is_parsed():
    model = {"class_path": "densevision.models.segmentation.denseaspp.denseaspp_densenet121",
             "init_args": {"drop_rat": 0.1}}  # fmt: skip
    with pytest.raises(jsonargparse.ArgumentError, match="drop_rat"):
        _parser().parse_object({"model": model})


def test_no_model_module_imports_a_private_name_from_another():
    for path in MODELS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("densevision"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if path.parent.name == "segmentation" or path.name in ("layers.py", "fused_dense_block.py"):
                    assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_reference_path_does_not_import_the_fast_path():
    tree = ast.parse((MODELS_DIR / "layers.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("densevision" in name for name in imported), imported
    assert DenseBlock.fused_forward is fused_dense_block.forward  # plugged in by densevision.models


def test_without_the_fast_path_plugged_in_a_block_runs_the_module_path(monkeypatch):
    block = DenseBlock(3, 8, 4, 2, 0.0).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        fused = block(x)
        assert fused_dense_block._step_aside_reason(block, x) is None  # the fused path did run
        reference = set_fast_path(copy.deepcopy(block), False)(x)
        calls = []
        monkeypatch.setattr(DenseBlock, "fused_forward", None)
        unplugged = block(x)
        monkeypatch.setattr(DenseBlock, "fused_forward", lambda b, t: calls.append(b) or None)
        stepped_aside = block(x)
    torch.testing.assert_close(fused, reference)
    assert torch.equal(unplugged, reference) and torch.equal(stepped_aside, reference)
    assert calls == [block]
