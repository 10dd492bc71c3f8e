"""DenseNet-FPN detectors: every preset builds; train/eval on small inputs; names and strides match the
anchor generator; stage freezing, frozen BatchNorm, local weights and build-time errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection import faster_rcnn as tv_faster_rcnn
from torchvision.models.detection import retinanet as tv_retinanet
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.misc import FrozenBatchNorm2d

from densevision import create_model, list_models
from densevision.models.backbones import DenseNet
from densevision.models.detection import (
    DenseNetFPNBackbone,
    build_anchor_generator,
    convert_to_frozen_batchnorm,
    densenet_fpn_detector,
    freeze_stages,
)
from densevision.models.features import FeatureSpec

KINDS = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet, "fcos": FCOS}
PRESETS = [name for kind in KINDS for name in list_models(f"{kind}_densenet*_fpn")]
SMALL = {"num_classes": 4, "min_size": 128, "max_size": 160}
# ResNet-like stages of an ImageNet DenseNet, written out independently of densenet_stages
STAGE_MODULES = [
    ("conv0", "norm0"),
    ("denseblock1",),
    ("transition1", "denseblock2"),
    ("transition2", "denseblock3"),
    ("transition3", "denseblock4", "norm5"),
]


def _small_body(**overrides) -> DenseNet:
    args = {"growth_rate": 8, "block_config": (1, 2, 2, 1), "stem_channels": 16, "features_only": True}
    return DenseNet(**(args | overrides))


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 128, 160), torch.rand(3, 128, 160)]
    targets = []
    for boxes in ([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 150.0, 120.0]], [[30.0, 10.0, 100.0, 60.0]]):
        boxes = torch.tensor(boxes)
        masks = torch.zeros(len(boxes), 128, 160, dtype=torch.uint8)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes, "labels": torch.arange(1, len(boxes) + 1), "masks": masks})
    return images, targets


def test_every_kind_has_all_imagenet_presets_and_a_tiny_one() -> None:
    for kind in KINDS:
        assert list_models(f"{kind}_densenet*_fpn") == [
            f"{kind}_densenet{n}_fpn" for n in ("121", "161", "169", "201", "_tiny")
        ]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_torchvision_detector(name) -> None:
    kind = name.split("_")[0]
    model = create_model(name, **SMALL)
    assert type(model) is KINDS[kind]
    assert isinstance(model.backbone, DenseNetFPNBackbone)
    # no weights: BatchNorm stays trainable everywhere, as torchvision does without pretrained weights
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    if kind in ("fasterrcnn", "maskrcnn"):
        assert model.roi_heads.box_predictor.cls_score.out_features == SMALL["num_classes"]
    else:
        assert model.head.classification_head.num_classes == SMALL["num_classes"]
    assert model.transform.min_size == (128,) and model.transform.max_size == 160


# Every kind runs on the tiny backbone (the R-CNNs' 1024-wide box head and 2000 proposals dominate at this
# size whatever the backbone); one ImageNet preset runs end to end on its densenet121 body.
@pytest.mark.parametrize(
    "name", [f"{kind}_densenet_tiny_fpn" for kind in KINDS] + ["retinanet_densenet121_fpn"]
)
def test_train_losses_and_eval_detections(name) -> None:
    model = create_model(name, **SMALL)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    if name.startswith("maskrcnn"):
        assert "loss_mask" in losses
    sum(losses.values()).backward()
    assert model.backbone.body.features.conv0.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det in detections:
        count = det["boxes"].shape[0]
        assert det["boxes"].shape == (count, 4) and det["labels"].shape == det["scores"].shape == (count,)
        if count:
            assert det["labels"].min() >= 1 and det["labels"].max() < SMALL["num_classes"]
        if name.startswith("maskrcnn"):
            assert det["masks"].shape == (count, 1, 128, 160)


@pytest.mark.parametrize(
    ("kind", "names", "default_sizes"),
    [
        ("fasterrcnn", ["0", "1", "2", "3", "pool"], tv_faster_rcnn._default_anchorgen().sizes),
        ("maskrcnn", ["0", "1", "2", "3", "pool"], tv_faster_rcnn._default_anchorgen().sizes),
        ("retinanet", ["0", "1", "2", "p6", "p7"], tv_retinanet._default_anchorgen().sizes),
        ("fcos", ["0", "1", "2", "p6", "p7"], ((8,), (16,), (32,), (64,), (128,))),
    ],
)
def test_pyramid_matches_anchor_generator_and_head(kind, names, default_sizes) -> None:
    model = create_model(f"{kind}_densenet_tiny_fpn", **SMALL).eval()
    x = torch.rand(1, 3, 256, 384)  # divisible by the coarsest stride, 128
    with torch.no_grad():
        features = model.backbone(x)
    assert list(features) == names == list(model.backbone.torchvision_names)
    strides = [spec.stride for spec in model.backbone.feature_info]
    assert [256 // f.shape[-2] for f in features.values()] == [384 // f.shape[-1] for f in features.values()]
    assert [256 // f.shape[-2] for f in features.values()] == strides
    assert all(f.shape[1] == model.backbone.out_channels for f in features.values())

    generator = model.rpn.anchor_generator if kind in ("fasterrcnn", "maskrcnn") else model.anchor_generator
    assert generator.sizes == default_sizes  # torchvision's defaults, derived here from the strides
    maps = list(features.values())
    anchors = generator(ImageList(x, [(256, 384)]), maps)[0]
    per_location = generator.num_anchors_per_location()
    assert anchors.shape[0] == sum(
        a * f.shape[-2] * f.shape[-1] for a, f in zip(per_location, maps, strict=True)
    )
    with torch.no_grad():
        if kind in ("fasterrcnn", "maskrcnn"):
            scores = model.rpn.head(maps)[0]
            predicted = sum(s.shape[1] * s.shape[2] * s.shape[3] for s in scores)
            assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]
        else:
            predicted = model.head(maps)["cls_logits"].shape[1]
    assert predicted == anchors.shape[0]  # one head output per anchor


@pytest.mark.parametrize("trainable", range(6))
def test_trainable_stages_freeze_the_first_stages(trainable) -> None:
    body = _small_body()
    freeze_stages(body, trainable)
    trainable_modules = [m for stage in STAGE_MODULES[5 - trainable :] for m in stage]
    for name, param in body.named_parameters():
        assert param.requires_grad == (name.split(".")[1] in trainable_modules), name
    assert any(p.requires_grad for p in body.parameters()) == (trainable > 0)


def test_trainable_stages_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"trainable_stages must be in \[0, 5\] .* got 6"):
        densenet_fpn_detector(kind="fcos", backbone=_small_body(), trainable_stages=6, **SMALL)
    with pytest.raises(ValueError, match=r"trainable_stages must be in \[0, 4\] .* got -1"):
        freeze_stages(_small_body(block_config=(1, 1, 1)), -1)


def test_frozen_bn_matches_batchnorm_in_eval() -> None:
    body = _small_body().eval()
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 64, 64)
    expected = body(x)
    convert_to_frozen_batchnorm(body)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert not any(k.endswith("num_batches_tracked") for k in body.state_dict())
    for name, out in body(x).items():
        torch.testing.assert_close(out, expected[name])


def test_frozen_bn_option() -> None:
    model = densenet_fpn_detector(kind="retinanet", backbone=_small_body(), frozen_bn=True, **SMALL)
    norms = [m for m in model.backbone.body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)


def test_weights_backbone_from_torchvision_file(tmp_path) -> None:
    reference = torchvision.models.densenet121().state_dict()
    path = tmp_path / "densenet121.pth"
    torch.save(reference, path)
    model = create_model("retinanet_densenet121_fpn", weights_backbone=str(path), **SMALL)
    body = model.backbone.body
    key = "features.denseblock3.denselayer7.conv2.weight"
    torch.testing.assert_close(body.state_dict()[key], reference[key])
    # defaults with weights, as torchvision: frozen BatchNorm holding the file's statistics, 3 stages train
    assert isinstance(body.features.norm5, FrozenBatchNorm2d)
    torch.testing.assert_close(body.features.norm5.running_var, reference["features.norm5.running_var"])
    assert not body.features.conv0.weight.requires_grad
    assert not body.features.denseblock1.denselayer1.conv1.weight.requires_grad
    assert body.features.transition1.conv.weight.requires_grad
    assert body.features.denseblock4.denselayer16.conv2.weight.requires_grad


def test_custom_backbone_and_stages() -> None:
    model = densenet_fpn_detector(
        kind="fasterrcnn",
        backbone=_small_body(),
        returned_stages=("c3", "c4", "c5"),
        fpn_channels=32,
        **SMALL,
    )
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    assert model.rpn.anchor_generator.sizes == ((64,), (128,), (256,), (512,))  # 8 x stride, P3..P6
    images, targets = _batch()
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


MAPS = [FeatureSpec(f"p{i}", 8, 2**i) for i in range(2, 7)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"anchor_sizes": ((32,), (64,), (128,), (256,))},
            r"anchor_sizes has 4 entries but the backbone returns 5 feature maps \(p2, p3, p4, p5, p6\): "
            "give one tuple per map",
        ),
        ({"aspect_ratios": ((0.5, 1.0, 2.0),) * 3}, "aspect_ratios has 3 entries but the backbone returns 5"),
        (
            {"anchor_sizes": (32, 64, 128, 256, 512)},
            r"anchor_sizes\[0\] = 32: each entry must be a non-empty",
        ),
        ({"aspect_ratios": ((1.0,), (1.0,), (0.0,), (1.0,), (1.0,))}, r"aspect_ratios\[2\] = \(0.0,\)"),
        (
            {"anchor_sizes": ((32,), (64,), (128, 181), (256,), (512,))},
            r"anchors per location .* differ between maps: \[3, 3, 6, 3, 3\]",
        ),
    ],
)
def test_anchor_mismatch_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_anchor_generator("fasterrcnn", MAPS, **kwargs)


def test_anchor_errors_at_model_build() -> None:
    with pytest.raises(ValueError, match=r"anchor_sizes has 5 entries .* 4 feature maps \(p3, p4, p5, p6\)"):
        densenet_fpn_detector(
            kind="maskrcnn",
            backbone=_small_body(),
            returned_stages=("c3", "c4", "c5"),
            anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
            **SMALL,
        )
    with pytest.raises(ValueError, match="FCOS predicts one point per location, .* gives 3 anchors"):
        create_model("fcos_densenet_tiny_fpn", aspect_ratios=((0.5, 1.0, 2.0),) * 5, **SMALL)


def test_custom_anchors_are_used() -> None:
    sizes = ((16,), (32,), (64,), (128,), (256,))
    model = create_model(
        "fasterrcnn_densenet_tiny_fpn", anchor_sizes=sizes, aspect_ratios=((1.0,),) * 5, **SMALL
    )
    assert model.rpn.anchor_generator.sizes == sizes
    assert model.rpn.head.cls_logits.out_channels == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_classes": 1}, ValueError, r"num_classes must be >= 2 .* got 1"),
        ({"min_size": 300, "max_size": 200}, ValueError, "need 1 <= min_size <= max_size, got min_size=300"),
        ({"kind": "fcos", "fpn_channels": 48}, ValueError, "fpn_channels must be a multiple of 32, got 48"),
        ({"kind": "ssd"}, ValueError, r"unknown detector kind 'ssd'; choose one of \['fasterrcnn'"),
        ({"returned_stages": ("c4", "c6")}, ValueError, r"unknown feature name\(s\) \['c6'\]"),
        (
            {"backbone": DenseNet(growth_rate=8, block_config=(1,), num_classes=3)},
            ValueError,
            "build the DenseNet with features_only=True",
        ),
    ],
)
def test_bad_detector_arguments(kwargs, error, message) -> None:
    args = {"kind": "fasterrcnn", "backbone": _small_body()} | SMALL | kwargs
    with pytest.raises(error, match=message):
        densenet_fpn_detector(**args)


def test_retinanet_octave_sizes_follow_torchvision() -> None:
    generator = build_anchor_generator("retinanet", [FeatureSpec("p3", 8, 8)])
    assert generator.sizes == ((32, int(32 * 2 ** (1 / 3)), int(32 * 2 ** (2 / 3))),)
    assert math.isclose(generator.aspect_ratios[0][0], 0.5)


def test_builders_are_yaml_class_path_targets() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    config = parser.parse_string(
        "model:\n"
        "  class_path: densevision.models.detection.densenet_fpn_detector\n"
        "  init_args:\n"
        "    kind: fcos\n"
        "    num_classes: 3\n"
        "    fpn_channels: 32\n"
        "    anchor_sizes: [[8], [16], [32], [64], [128]]\n"
        "    backbone:\n"
        "      class_path: densevision.models.backbones.DenseNet\n"
        "      init_args: {growth_rate: 8, block_config: [1, 1, 1, 1], features_only: true}\n"
    )
    model = parser.instantiate(config).model
    assert isinstance(model, FCOS) and model.backbone.out_channels == 32
    with pytest.raises(jsonargparse.ArgumentError, match="num_clases"):
        parser.parse_string(
            "model:\n  class_path: densevision.models.detection.densenet_fpn.fcos_densenet_tiny_fpn\n"
            "  init_args: {num_clases: 3}\n"
        )
