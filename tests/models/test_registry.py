"""``registry.preset``: a declaration's name, docstring and typed options, its body supplied by the
decorator."""

import inspect

import pytest
import torch

import densevision
from densevision.models.backbones.densenet import DenseNet, densenet40_k12, densenet121
from densevision.models.registry import preset
from densevision.models.segmentation.tiramisu import fcdensenet56


def test_a_declared_preset_keeps_its_name_docstring_and_signature():
    assert densenet121.__name__ == densenet121.__qualname__ == "densenet121"
    assert densenet121.__module__ == "densevision.models.backbones.densenet"
    assert "7,978,856 parameters" in densenet121.__doc__
    assert list(inspect.signature(fcdensenet56).parameters) == ["num_classes", "options"]
    assert densevision.create_model("densenet121") is not None and "densenet121" in densevision.list_models()


def test_a_preset_fills_in_its_declared_defaults_and_passes_the_caller_s_keywords_on():
    with torch.device("meta"):
        assert fcdensenet56().num_classes == 11  # the declaration's default
        assert fcdensenet56(num_classes=3, stem_stride=2).min_input_size == 64
        assert densenet40_k12().num_classes == 10  # cifar_densenet's own default
        assert densenet40_k12(num_classes=100).num_classes == 100


def test_what_a_preset_fixes_cannot_be_passed_again():
    with pytest.raises(TypeError, match="growth_rate"):
        densenet121(growth_rate=8)


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'densenet121' is registered twice"):

        @preset(DenseNet, growth_rate=32)
        def densenet121() -> DenseNet:
            """A second densenet121."""


@pytest.mark.parametrize("name", ["maskrcnn_densenet_tiny_fpn", "fasterrcnn_densenet_tiny_fpn"])
def test_detections_per_img_caps_what_a_detector_keeps(name: str) -> None:
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    found = {}
    for cap in (100, 2):
        torch.manual_seed(0)  # the same weights for both caps
        detector = densevision.create_model(name, num_classes=3, min_size=64, max_size=64,
                                            detections_per_img=cap).eval()
        with torch.no_grad():
            (found[cap],) = detector([image])
    assert len(found[100]["boxes"]) > 2  # an untrained detector keeps many low-scoring boxes
    assert len(found[2]["boxes"]) == 2 and torch.equal(found[2]["boxes"], found[100]["boxes"][:2])
    with pytest.raises(ValueError, match="detections_per_img must be >= 1, got 0"):
        densevision.create_model(name, num_classes=3, detections_per_img=0)
