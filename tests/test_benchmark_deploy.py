"""``densevision benchmark deploy`` end to end on tiny models (the plumbing, not the figures): every runtime
row, agreement with the baseline, OpenVINO through ``load_backend`` beside raw OpenVINO, the JSON and the
results page."""

from __future__ import annotations

import json

import pytest
import torchvision

from densevision.apps.benchmark import main
from densevision.benchmarks import builders, deploy
from densevision.models.backbones.densenet import DenseNet
from densevision.models.segmentation.tiramisu import FCDenseNet

pytest.importorskip("openvino", reason="the deploy extra (openvino) is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra (onnxruntime) is not installed")
pytest.importorskip("nncf", reason="the deploy extra (nncf) is not installed")


def _tiny(source: str, name: str, memory_efficient: bool = False, **_: object):
    """densenet121 as a k=8 four-block DenseNet from either library (same keys); anything else a tiny
    FC-DenseNet (no torchvision counterpart: its baseline is the module path)."""
    if name == "densenet121":
        if source == "torchvision":
            return torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, num_classes=10)
        return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), stem_channels=16, num_classes=10)
    return FCDenseNet(num_classes=5, growth_rate=4, down_blocks=(2, 2), bottleneck_layers=2, stem_channels=8,
                      drop_rate=0.0)


def test_deploy_table_has_every_runtime_and_agrees_with_the_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(builders, "build_model", _tiny)
    out, page = tmp_path / "deploy.json", tmp_path / "deployment.md"
    assert main(["deploy", "--quick", "--models", "densenet121", "tinyseg", "--threads", "1",
                 "--output", str(out), "--page", str(page)]) == 0
    report = json.loads(out.read_text())
    assert report["threads"] == 1 and report["cpu"]["model_name"] and report["versions"]["openvino"]
    classifier = {row["path"]: row for row in report["tables"]["densenet121"]["rows"]}
    segmenter = {row["path"]: row for row in report["tables"]["tinyseg"]["rows"]}
    assert next(iter(classifier)) == "torchvision eager fp32"
    assert next(iter(segmenter)) == "module path eager fp32"
    expected = {"densevision eager fp32", "densevision optimized fp32", "onnxruntime fp32 (load_backend)",
                "openvino fp32 (raw)", "openvino fp32 (load_backend)", "openvino int8 (raw)",
                "openvino int8 (load_backend)"}
    assert expected <= set(segmenter) and expected <= set(classifier)
    for path in ("densevision eager fp32", "onnxruntime fp32 (load_backend)", "openvino fp32 (load_backend)"):
        assert segmenter[path]["pixel_agree"] >= 0.999 and segmenter[path]["max_abs_diff"] < 1e-3
        assert classifier[path]["top1_agree"] == 1.0
    assert segmenter["openvino int8 (load_backend)"]["pixel_agree"] >= 0.8
    for rows in (classifier, segmenter):
        assert rows[next(iter(rows))]["vs_baseline"] == 1.0
        assert all(row["images_per_s"] > 0 for row in rows.values())
        assert rows["openvino fp32 (load_backend)"]["backend_vs_raw"] > 0
        assert rows["openvino fp32 (raw)"]["backend_vs_raw"] == ""
    text = page.read_text()
    assert report["cpu"]["model_name"] in text and "## tinyseg, batch 1, 64x96" in text
    assert "Which backend on which CPU" in text and "| openvino int8 (load_backend) |" in text
    assert "tinyseg: fastest with >= 99 % agreement is **" in text
    assert "tinyseg, batch 1, 64x96, 1 threads" in capsys.readouterr().out


def test_cpu_info_names_the_cpu_and_its_flags():
    info = deploy.cpu_info()
    assert info["model_name"] and info["slug"].count("-") >= 1
    assert set(info["flags"]) <= {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"}


def test_deploy_options_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--camvid-frames and --predict-model go together"):
        main(["deploy", "--camvid-frames", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--camvid-frames .*nope: no such folder"):
        main(["deploy", "--camvid-frames", str(tmp_path / "nope"), "--predict-model", str(tmp_path)])
    with pytest.raises(SystemExit, match="--repeats and --threads must be positive"):
        main(["deploy", "--repeats", "0"])
