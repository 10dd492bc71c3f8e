"""``densevision benchmark``: runs end to end on tiny configurations (no timing assertions)."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torchvision

from densevision.apps import benchmark
from densevision.apps.benchmark import main
from densevision.benchmarks import builders, memory
from densevision.benchmarks.agreement import agreement, camvid_batch
from densevision.benchmarks.backbone import run_backbone
from densevision.benchmarks.memory import peak_allocated_bytes
from densevision.benchmarks.timing import _fmt
from densevision.models.backbones.densenet import DenseNet, cifar_densenet
from densevision.models.segmentation.tiramisu import FCDenseNet

MIB = 2**20


def _tiny_pair(source: str, name: str, memory_efficient: bool = False, **_: object):
    """A k=8 four-block DenseNet from either library (same state-dict keys): densenet121 takes minutes per
    step on a loaded 2-core CI machine, and this test checks the plumbing, not the figures."""
    if source == "torchvision":
        return torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, memory_efficient=memory_efficient)
    return DenseNet(
        growth_rate=8, block_config=(2, 2, 2, 2), stem_channels=16, memory_efficient=memory_efficient
    )


def test_backbone_quick_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builders, "build_model", _tiny_pair)
    out = tmp_path / "bench.json"
    assert main(["backbone", "--quick", "--no-memory", "--camvid", "none", "--json", str(out)]) == 0
    tables = json.loads(out.read_text())
    sources = [(row["source"], row["memory_efficient"]) for row in tables["training"]]
    assert sorted(sources) == sorted((s, me) for s in ("torchvision", "densevision") for me in (False, True))
    assert all(row["time_vs_tv_plain"] > 0 for row in tables["training"])
    paths = [row["path"] for row in tables["inference"]]
    assert paths[:3] == ["torchvision eager fp32", "densevision eager fp32", "densevision optimized fp32"]
    assert all(row["top1_agree"] >= 0.5 for row in tables["inference"])
    assert "training step" in capsys.readouterr().out


def test_backbone_memory_columns(monkeypatch):
    monkeypatch.setattr(builders, "build_model", _tiny_pair)
    # In-process, so the tiny models reach the measurement; the subprocess route is tested by the depth run.
    monkeypatch.setattr(memory, "peak_train_memory_mib", memory.measure_train_memory)
    tables = run_backbone(benchmark._parser().parse_args(
        ["backbone", "--batch-size", "2", "--image-size", "32", "--repeats", "1", "--camvid", "none"]))
    for row in tables["training"]:
        assert row["act_peak_mib"] > 0 and row["rss_mib"] >= 0
        params = sum(p.numel() for p in _tiny_pair(str(row["source"]), "").parameters())
        # parameters + gradients + momentum, plus a few BatchNorm buffers
        assert 3 * params * 4 / MIB <= row["state_mib"] < 3.1 * params * 4 / MIB
    assert tables["training"][0]["mem_vs_tv_plain"] == pytest.approx(1.0)


def _hold_4_then_8_mib() -> None:
    first = torch.ones(MIB)  # float32: 4 MiB
    second = torch.ones(2 * MIB)  # 8 MiB while the first is live
    del first, second
    torch.ones(MIB // 4)  # 1 MiB after both are freed: below the peak


def test_peak_allocated_bytes_of_a_known_allocation_pattern():
    resident = torch.ones(MIB)  # live before the call: not counted
    assert peak_allocated_bytes(_hold_4_then_8_mib) == pytest.approx(12 * MIB, abs=64 * 1024)
    assert peak_allocated_bytes(lambda: resident.add_(1)) < 64 * 1024
    assert peak_allocated_bytes(lambda: None) == 0


def test_measured_step_frees_nothing_allocated_before_it(capfd):
    """Freeing a block the profiler has not seen allocated is not subtracted from its running total (torch
    warns, at most once a second); the measured step must not do it, or its peak would be overstated."""
    for memory_efficient in (False, True):
        spec = {"source": "densevision", "name": "densenet_bc", "memory_efficient": memory_efficient,
                "depth": 10, "growth": 4}
        assert memory.measure_train_memory(spec, batch_size=2, image_size=16)["act_peak_mib"] > 0
        assert "unknown size" not in capfd.readouterr().err
    held = [torch.ones(1024)]
    time.sleep(1.1)  # torch warns at most once a second
    peak_allocated_bytes(held.pop)
    assert "unknown size" in capfd.readouterr().err


def test_peak_allocated_bytes_rejects_other_devices():
    with pytest.raises(ValueError, match="'cpu' or 'cuda' devices, got meta"):
        peak_allocated_bytes(lambda: None, "meta")


@pytest.mark.slow
def test_depth_table_reports_state_activation_and_rss_per_mode(tmp_path):
    out = tmp_path / "depth.json"
    main(["depth", "--depths", "16", "--growth", "4", "--batch-size", "2", "--json", str(out)])
    (row,) = json.loads(out.read_text())["depth"]
    model = cifar_densenet(16, 4, bottleneck=True)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert row["state_mib"] == pytest.approx((3 * params * 4 + buffers) / MIB)
    for mode in ("plain", "me"):
        assert row[f"{mode}_act_mib"] > 0 and row[f"{mode}_rss_mib"] >= 0
        assert row[f"{mode}_act_mib_per_layer"] == pytest.approx(row[f"{mode}_act_mib"] / 16)
    # two layers per block already: the memory-efficient block stores no BN-ReLU outputs
    assert row["me_act_mib"] < 0.9 * row["plain_act_mib"]


def test_bad_sizes_are_rejected():
    with pytest.raises(SystemExit, match="--repeats, --batch-size, --image-size, --width and --agreement"):
        main(["depth", "--repeats", "0"])
    with pytest.raises(SystemExit, match="--agreement-images must be positive"):
        main(["models", "--agreement-images", "0"])


def _tiny_segmenter(source: str, name: str, memory_efficient: bool = False, **_: object) -> FCDenseNet:
    return FCDenseNet(num_classes=5, growth_rate=4, down_blocks=(2, 2), bottleneck_layers=2, stem_channels=8,
                      drop_rate=0.0, memory_efficient=memory_efficient)


@pytest.mark.parametrize("data", ["random", "camvid"])
def test_models_state_segmentation_agreement(tmp_path, capsys, monkeypatch, request, data):
    monkeypatch.setattr(builders, "build_model", _tiny_segmenter)
    camvid = str(request.getfixturevalue("shared_data") / "camvid") if data == "camvid" else "none"
    out = tmp_path / "bench.json"
    assert main(["models", "--quick", "--no-memory", "--models", "tiny", "--camvid", camvid,
                 "--agreement-images", "2", "--json", str(out)]) == 0
    tables = json.loads(out.read_text())
    rows = {row["path"]: row for row in tables["inference"]}
    eager, fp32 = rows["densevision eager fp32"], rows["densevision optimized fp32"]
    # without a torchvision counterpart, the baseline is the model on its module path (NCHW, per-layer cat)
    assert "speedup_vs_reference" in rows["reference eager fp32"]
    assert rows["reference eager fp32"]["max_abs_diff"] < 1e-4
    assert tables["models"][0]["time_vs_reference"] > 0
    assert eager["pixel_agree"] == 1 and eager["max_abs_diff"] == 0
    assert eager["miou_vs_fp32"] == pytest.approx(1)
    assert fp32["pixel_agree"] >= 0.999 and fp32["miou_vs_fp32"] >= 0.99 and fp32["max_abs_diff"] < 1e-3
    if "densevision optimized bf16" in rows:  # where the CPU has AMX / AVX512-BF16
        assert rows["densevision optimized bf16"]["pixel_agree"] >= 0.5
    title = "2 CamVid val images (shorter side resized to 64, centre crop)" if data == "camvid" else \
        "the random timing batch"
    assert f"agreement with eager fp32 on {title}" in capsys.readouterr().out


def _tiny_segmenter_or_reference(source: str, name: str, memory_efficient: bool = False, **_: object):
    model = _tiny_segmenter(source, name, memory_efficient)
    return builders.ReferenceModel(model) if source == "reference" else model


def test_models_memory_columns_against_the_module_path(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "build_model", _tiny_segmenter_or_reference)
    monkeypatch.setattr(memory, "peak_train_memory_mib", memory.measure_train_memory)  # in-process
    out = tmp_path / "bench.json"
    main(["models", "--quick", "--models", "tiny", "--camvid", "none", "--json", str(out)])
    (row,) = json.loads(out.read_text())["models"]
    assert row["reference_act_mib"] > 0 and row["state_mib"] > 0
    assert row["me_mem_vs_reference"] == pytest.approx(row["me_act_mib"] / row["reference_act_mib"])
    assert row["me_mem_ratio"] == pytest.approx(row["me_act_mib"] / row["plain_act_mib"])
    assert row["me_act_mib"] < row["plain_act_mib"]


def test_agreement_of_label_maps():
    """Reference labels [[0, 0], [1, 1]], path labels [[0, 1], [1, 1]]: IoU 1/2 (class 0), 2/3 (class 1)."""
    expected = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]])
    out = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]])
    row = agreement(out, expected, (2, 2))
    assert row["pixel_agree"] == pytest.approx(3 / 4)
    assert row["miou_vs_fp32"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert row["max_abs_diff"] == 1
    assert _fmt(1.24e-5) == "1.2e-05" and _fmt(0.0) == "0.000"
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert agreement(logits, torch.tensor([[0.0, 1.0], [0.0, 1.0]]), (2, 2))["top1_agree"] == 0.5


def test_camvid_batch_is_resized_and_cropped(shared_data):
    images = camvid_batch(shared_data / "camvid", count=3, size=40)
    assert images.shape == (3, 3, 40, 40) and images.dtype == torch.float32
    assert images.mean().abs() < 1.5 and not torch.equal(images[0], images[1])


def test_missing_camvid_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--camvid .*nope: no such folder"):
        main(["models", "--quick", "--no-memory", "--camvid", str(tmp_path / "nope")])


def test_models_take_a_non_square_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builders, "build_model", _tiny_segmenter)
    assert main(["models", "--quick", "--no-memory", "--models", "tiny", "--camvid", "none",
                 "--image-size", "32", "--width", "48"]) == 0
    out = capsys.readouterr().out
    assert "models, batch 2 x 32x48" in out and "inference, batch 2 x 32x48" in out
    with pytest.raises(SystemExit, match="--width .* must be positive"):
        main(["models", "--quick", "--models", "tiny", "--width", "0"])
