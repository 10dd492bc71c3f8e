"""Every head takes RDNet, VoVNet and HarDNet through ``feature_info`` alone: the Tiramisu decoder, the
four FPN detectors (train and eval steps), the registered presets, local timm weights with frozen early
stages; FC-HarDNet-70 against the paper's parameter count."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet

import densevision
from densevision.models.detection import densenet_fpn_detector, family_fpn_detector
from densevision.models.detection.family_fpn import PRESET_BACKBONES
from densevision.models.segmentation import FCHarDNet, TiramisuSegmenter
from tests.models.test_dense_family import TINY, count_params

KINDS = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet, "fcos": FCOS}
# each kind on each family at least once, small backbones
PAIRS = [("fasterrcnn", "rdnet"), ("maskrcnn", "vovnet"), ("retinanet", "hardnet"), ("fcos", "hardnet_ds"),
         ("fcos", "rdnet"), ("fasterrcnn", "hardnet")]
RETURNED = {"fasterrcnn": ["c2", "c3", "c4", "c5"], "maskrcnn": ["c2", "c3", "c4", "c5"],
            "retinanet": ["c3", "c4", "c5"], "fcos": ["c3", "c4", "c5"]}


def test_fchardnet70_matches_the_papers_parameter_count():
    model = densevision.create_model("fchardnet70")  # 19 classes: Cityscapes, as in the paper
    assert count_params(model) == 4_119_257
    assert abs(count_params(model) - 4.1e6) < 0.05e6
    assert [(s.name, s.channels) for s in model.feature_info] == [
        ("c2", 48), ("c3", 78), ("c4", 160), ("c5", 214), ("c6", 320)
    ]


def test_fchardnet_trains_and_returns_the_input_size():
    model = FCHarDNet(num_classes=5, stem_channels=(8, 8, 8, 16), stage_channels=(16, 24, 32, 40, 48),
                      growth_rates=(4, 4, 6, 6, 8), layers=(2, 2, 4, 4, 4))
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 70, 90)).shape == (1, 5, 70, 90)  # not a multiple of 64
    with pytest.raises(ValueError, match=r"H, W >= 64 \(its total stride\), got \(1, 3, 32, 64\)"):
        model(torch.randn(1, 3, 32, 64))


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiramisu_decoder_on_every_family(family):
    backbone = TINY[family](features_only=True)
    model = TiramisuSegmenter(backbone=backbone, num_classes=3, growth_rate=4)
    out = model(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    out.mean().backward()
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 40, 56)).shape == (1, 3, 40, 56)  # not multiples of 32


@pytest.mark.parametrize("name", ["tiramisu_rdnet_tiny", "tiramisu_vovnet39", "tiramisu_hardnet68"])
def test_tiramisu_presets(name):
    with torch.device("meta"):
        model = densevision.create_model(name, num_classes=11)
    assert isinstance(model, TiramisuSegmenter) and model.classifier.out_channels == 11


def _batch(size: int = 64):
    images = [torch.rand(3, size, size + 16), torch.rand(3, size, size + 16)]
    targets = []
    for box in ([8.0, 8.0, 40.0, 50.0], [20.0, 10.0, 70.0, 60.0]):
        masks = torch.zeros(1, size, size + 16, dtype=torch.uint8)
        masks[:, 10:50, 10:40] = 1
        targets.append({"boxes": torch.tensor([box]), "labels": torch.tensor([1]), "masks": masks})
    return images, targets


@pytest.mark.parametrize(("kind", "family"), PAIRS)
def test_detectors_train_and_detect_on_every_family(kind, family):
    body = TINY[family](features_only=True, out_features=RETURNED[kind])
    # 64 FPN channels: FCOS's GroupNorm(32) needs 2 per group on the 1x1 P7 of a 64 px image
    detector = densenet_fpn_detector(kind=kind, backbone=body, num_classes=3, fpn_channels=64, min_size=64,
                                     max_size=80)
    assert isinstance(detector, KINDS[kind])
    images, targets = _batch()
    losses = detector(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    detector.eval()
    with torch.no_grad():
        detections = detector(images[:1])
    assert set(detections[0]) >= {"boxes", "labels", "scores"}


def test_every_family_preset_is_registered_with_its_detector_class():
    for kind, cls in KINDS.items():
        for backbone in PRESET_BACKBONES:
            preset = getattr(densevision.models.detection.family_fpn, f"{kind}_{backbone}_fpn")
            assert preset.__annotations__["return"] is cls
            assert f"{kind}_{backbone}_fpn" in densevision.list_models()
    assert {"fcos_rdnet_tiny_fpn", "fasterrcnn_vovnet39_fpn"} <= set(densevision.list_models())


def test_preset_loads_timm_backbone_weights_and_freezes_early_stages(tmp_path):
    timm = pytest.importorskip("timm")
    source = timm.create_model("rdnet_tiny")
    path = tmp_path / "rdnet_tiny.pth"
    torch.save(source.state_dict(), path)
    detector = densevision.create_model("fcos_rdnet_tiny_fpn", num_classes=3, weights_backbone=str(path),
                                        min_size=64, max_size=64)
    body = detector.backbone.body
    assert torch.equal(body.stem[0].weight, source.stem[0].weight)
    timm_layer = source.dense_stages[6][2].dense_block2.layers.layers
    assert torch.equal(body.stages[6].layers[2].fc2.weight, timm_layer[4].weight)
    # as torchvision with pretrained weights: the last 3 of 5 stages train
    trainable = [any(p.requires_grad for m in group for p in m.parameters()) for group in body.stage_groups()]
    assert trainable == [False, False, True, True, True]


def test_family_detector_errors():
    with pytest.raises(ValueError, match=r"backbone 'densenet121' is not an RDNet, VoVNet or HarDNet name"):
        family_fpn_detector(kind="fcos", backbone="densenet121")
    with pytest.raises(ValueError, match=r"unknown detector kind 'yolo'"):
        family_fpn_detector(kind="yolo", backbone="rdnet_tiny")
