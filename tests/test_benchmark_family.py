"""``densevision benchmark family``: the side-by-side table of registered models, ratios to the first."""

from __future__ import annotations

import json

import pytest

from densevision.apps import benchmark
from densevision.apps.benchmark import main


def test_family_table_has_every_model_with_ratios_to_the_first(tmp_path, monkeypatch):
    # In-process memory measurement (the subprocess route is tested by the depth run).
    monkeypatch.setattr(benchmark, "peak_train_memory_mib", benchmark.measure_train_memory)
    out = tmp_path / "family.json"
    assert main(["family", "--models", "hardnet39ds", "fchardnet70", "--batch-size", "2",
                 "--image-size", "64", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["family"]
    assert [r["model"] for r in rows] == ["hardnet39ds", "fchardnet70"]
    first = rows[0]
    assert first["step_vs_hardnet39ds"] == first["infer_vs_hardnet39ds"] == first["mem_vs_hardnet39ds"] == 1.0
    assert rows[1]["params_m"] == pytest.approx(4.119257)
    assert all(r["gflops_per_image"] > 0 and r["act_peak_mib"] > 0 and r["step_s"] > 0 for r in rows)
