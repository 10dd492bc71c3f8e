"""``densevision benchmark``: runs end to end on tiny configurations (no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torchvision

from densevision import benchmark
from densevision.benchmark import main, peak_train_memory_mib
from densevision.models.backbones.densenet import DenseNet


def _tiny_pair(source: str, name: str, memory_efficient: bool = False, **_: object):
    """A k=8 four-block DenseNet from either library (same state-dict keys): densenet121 takes minutes per
    step on a loaded 2-core CI machine, and this test checks the plumbing, not the figures."""
    if source == "torchvision":
        return torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, memory_efficient=memory_efficient)
    return DenseNet(
        growth_rate=8, block_config=(2, 2, 2, 2), stem_channels=16, memory_efficient=memory_efficient
    )


def test_backbone_quick_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "build_model", _tiny_pair)
    out = tmp_path / "bench.json"
    assert main(["backbone", "--quick", "--no-memory", "--json", str(out)]) == 0
    tables = json.loads(out.read_text())
    sources = [(row["source"], row["memory_efficient"]) for row in tables["training"]]
    assert sorted(sources) == sorted((s, me) for s in ("torchvision", "densevision") for me in (False, True))
    assert all(row["time_vs_tv_plain"] > 0 for row in tables["training"])
    paths = [row["path"] for row in tables["inference"]]
    assert paths[:3] == ["torchvision eager fp32", "densevision eager fp32", "densevision optimized fp32"]
    assert all(row["top1_agree"] >= 0.5 for row in tables["inference"])
    assert "training step" in capsys.readouterr().out


def test_peak_memory_is_measured_in_a_subprocess():
    spec = {"source": "densevision", "name": "densenet_bc", "memory_efficient": False, "depth": 10,
            "growth": 4}
    assert peak_train_memory_mib(spec, batch_size=4, image_size=32) > 0


def test_bad_sizes_are_rejected():
    with pytest.raises(SystemExit, match="--repeats, --batch-size and --image-size must be positive"):
        main(["depth", "--repeats", "0"])
