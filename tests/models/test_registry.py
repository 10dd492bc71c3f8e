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
