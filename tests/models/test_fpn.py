"""FPN neck: output keys, channels and strides against its own feature_info."""

from __future__ import annotations

import pytest
import torch

from densevision.models.backbones import DenseNet
from densevision.models.features import FeatureSpec
from densevision.models.necks import FPN


@pytest.fixture(scope="module")
def body() -> DenseNet:
    return DenseNet(
        growth_rate=8,
        block_config=(1, 2, 2, 2),
        stem_channels=16,
        features_only=True,
        out_features=("c2", "c3", "c4", "c5"),
    ).eval()


@pytest.mark.parametrize(
    ("extra_levels", "source", "names"),
    [
        ("none", "p5", ["p2", "p3", "p4", "p5"]),
        ("pool", "p5", ["p2", "p3", "p4", "p5", "p6"]),
        ("p6p7", "p5", ["p2", "p3", "p4", "p5", "p6", "p7"]),
        ("p6p7", "c5", ["p2", "p3", "p4", "p5", "p6", "p7"]),
    ],
)
@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_outputs_match_feature_info(body, extra_levels, source, names, size) -> None:
    fpn = FPN(body.feature_info, out_channels=24, extra_levels=extra_levels, p6p7_source=source)
    assert [spec.name for spec in fpn.feature_info] == names
    features = body(torch.rand(1, 3, *size))
    out = fpn(features)
    assert list(out) == names
    expected = [tuple(features[spec.name].shape[-2:]) for spec in body.feature_info]
    while len(expected) < len(names):  # extra levels: stride-2 subsampling / 3x3 convs, rounded up
        expected.append(tuple(-(-s // 2) for s in expected[-1]))
    for spec, (name, tensor), hw in zip(fpn.feature_info, out.items(), expected, strict=True):
        assert spec.name == name and spec.channels == fpn.out_channels == tensor.shape[1] == 24
        assert tuple(tensor.shape[-2:]) == hw
        assert spec.stride == 2 ** int(name[1:])


def test_p6p7_source_picks_input_channels(body) -> None:
    c5 = body.feature_info[-1]
    from_c5 = FPN(body.feature_info, out_channels=c5.channels, extra_levels="p6p7", p6p7_source="c5")
    from_p5 = FPN(body.feature_info, out_channels=24, extra_levels="p6p7", p6p7_source="p5")
    # a C5 with as many channels as the FPN must still come from C5 (torchvision compares channel counts)
    assert not from_c5.fpn.extra_blocks.use_P5 and from_c5.fpn.extra_blocks.p6.in_channels == c5.channels
    assert from_p5.fpn.extra_blocks.use_P5 and from_p5.fpn.extra_blocks.p6.in_channels == 24


def test_subset_of_features_and_lateral_channels(body) -> None:
    fpn = FPN(body.feature_info[1:], out_channels=16)
    assert [block[0].in_channels for block in fpn.fpn.inner_blocks] == [
        spec.channels for spec in body.feature_info[1:]
    ]
    out = fpn(body(torch.rand(2, 3, 64, 64)))  # the unused c2 key is ignored
    assert list(out) == ["p3", "p4", "p5"]


def test_bad_inputs() -> None:
    specs = (FeatureSpec("c3", 8, 8), FeatureSpec("c4", 8, 16))
    with pytest.raises(ValueError, match="extra_levels must be 'none', 'pool' or 'p6p7', got 'p6'"):
        FPN(specs, extra_levels="p6")
    with pytest.raises(ValueError, match="ordered high to low resolution"):
        FPN(specs[::-1])
    with pytest.raises(ValueError, match="in_features is empty"):
        FPN(())
    with pytest.raises(ValueError, match="p6p7_source must be 'p5' or 'c5'"):
        FPN(specs, extra_levels="p6p7", p6p7_source="c4")
    with pytest.raises(KeyError, match=r"FPN expects features \['c4'\]"):
        FPN(specs)({"c3": torch.rand(1, 8, 4, 4)})
