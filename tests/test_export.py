from __future__ import annotations

import re

import pytest
import torch

import densevision
from densevision.cli import main
from densevision.inference.export import Comparison, export_model
from densevision.models.backbones.densenet import DenseNet
from tests.fit_checkpoint import cli_hparams, write_fit_checkpoint


def test_backbone_export_runs_with_a_second_batch_and_size(tmp_path, capsys):
    backbone = DenseNet(growth_rate=4, block_config=(1, 1, 1), stem_channels=8, features_only=True)
    results = export_model(backbone, tmp_path, name="tiny", input_size=(64, 48), dynamic=True)
    out = capsys.readouterr().out
    assert "outputs ['c1', 'c2', 'c3', 'c4']" in out and "TorchScript (trace)" in out
    assert [r.input_shape for r in results] == [(1, 3, 64, 48), (2, 3, 96, 60)] * 2
    assert all(r.ok for r in results) and all(r.max_abs_ref > 0 for r in results)
    assert (tmp_path / "tiny.onnx").is_file() and (tmp_path / "tiny.pt").is_file()


def test_export_command_rebuilds_a_fit_run(tmp_path, capsys):
    tiny = {"growth_rate": 4, "block_config": [1, 1], "stem": "cifar", "stem_channels": 8, "num_classes": 3}
    run = tmp_path / "myrun"
    hparams = cli_hparams("densevision.models.backbones.densenet.DenseNet", tiny, num_classes=3)
    write_fit_checkpoint(run / "checkpoints" / "last.ckpt", DenseNet(**tiny), hparams, num_classes=3)
    code = main(
        [
            "export",
            "--checkpoint",
            str(run / "checkpoints" / "last.ckpt"),
            "--format",
            "onnx",
            "--output",
            str(tmp_path / "out"),
            "--input-size",
            "16",
            "16",
        ]
    )
    out = capsys.readouterr().out
    # the folder export verifies batch 1 and batch 2 (its batch axis is free), and names its file model.onnx
    assert code == 0 and "outputs ['logits']" in out and "2/2 verifications within tolerance" in out
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "densevision.json").is_file()
    torch.save(DenseNet(**tiny).state_dict(), tmp_path / "w.pth")
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "--model",
                "densenet40_k12",
                "--num-classes",
                "7",
                "--checkpoint",
                str(tmp_path / "w.pth"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    assert re.search(
        r"asked for, 'densenet40_k12' \(num_classes=7\).*features.conv0", capsys.readouterr().err
    )


def test_comparison_flags_a_mismatch(tmp_path):
    ref = [torch.ones(2, 3)]
    assert not Comparison(tmp_path, (1,), 0.01, 1.0).ok
    assert Comparison(tmp_path, (1,), 5e-4, 1.0).ok
    from densevision.inference.export import compare

    assert not compare(tmp_path, torch.zeros(1), [torch.ones(3, 3)], ref).ok  # sizes differ


def _registered(name: str) -> str:
    if name not in densevision.list_models():
        pytest.skip(f"{name} is not registered in this tree")
    return name


def test_segmentation_export_parity(tmp_path):
    from densevision.models.segmentation.tiramisu import FCDenseNet

    model = FCDenseNet(num_classes=3, growth_rate=4, down_blocks=(1, 1), bottleneck_layers=1, stem_channels=8)
    results = export_model(model, tmp_path, name="seg", input_size=(16, 16), dynamic=True, log=lambda _: None)
    assert [r.input_shape for r in results] == [(1, 3, 16, 16), (2, 3, 24, 20)] * 2
    assert all(r.ok for r in results) and all(r.max_abs_ref > 0 for r in results)


@pytest.mark.slow
def test_detector_onnx_export_parity(tmp_path):
    builders = pytest.importorskip("densevision.models.detection.densenet_fpn")
    body = DenseNet(
        growth_rate=4,
        block_config=(1, 1, 1, 1),
        stem_channels=8,
        features_only=True,
        out_features=["c2", "c3", "c4", "c5"],
    )
    model = builders.densenet_fpn_detector(
        kind="fasterrcnn", backbone=body, num_classes=3, min_size=64, max_size=64, fpn_channels=16
    )
    results = export_model(
        model, tmp_path, name="det", formats=("onnx",), input_size=(64, 64), log=lambda _: None
    )
    assert len(results) == 1 and results[0].ok and results[0].max_abs_ref > 0  # boxes were compared
