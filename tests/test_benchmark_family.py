"""``densevision benchmark family``: the side-by-side table of registered models, ratios to the first."""

from __future__ import annotations

import json

import pytest

from densevision.apps.benchmark import main


def test_family_table_has_every_model_with_ratios_to_the_first(tmp_path):
    # --no-memory: the peak-memory subprocess is exercised by the depth benchmark's test
    out = tmp_path / "family.json"
    args = ["--batch-size", "2", "--image-size", "64", "--repeats", "1", "--no-memory", "--json", str(out)]
    assert main(["family", "--models", "hardnet39ds", "fchardnet70", *args]) == 0
    rows = json.loads(out.read_text())["family"]
    assert [r["model"] for r in rows] == ["hardnet39ds", "fchardnet70"]
    assert rows[0]["step_vs_hardnet39ds"] == rows[0]["infer_vs_hardnet39ds"] == 1.0
    assert rows[1]["params_m"] == pytest.approx(4.119257)
    assert all(r["gflops_per_image"] > 0 and r["step_s"] > 0 and "act_peak_mib" not in r for r in rows)
