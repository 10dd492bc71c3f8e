"""The documentation's generators: figures from the data files, tables in pages, the command reference."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "results" / "data"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_data_file_names_its_cpu_date_and_command() -> None:
    for path in sorted(DATA.glob("*.json")):
        table = json.loads(path.read_text())
        for field in ("title", "cpu", "date", "command", "columns", "rows"):
            assert table.get(field), f"{path.name}: no {field}"
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), f"{path.name}: ragged rows"


def test_figures_are_drawn_from_the_data_files(tmp_path: Path) -> None:
    figures = _load(ROOT / "tools" / "make_figures.py")
    paths = figures.make_figures(DATA, tmp_path)
    expected = {"demo_training_curve.png", "camvid_side_by_side.png", "perf_family.png"}
    assert {p.name for p in paths} >= expected
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200


def test_a_figure_follows_its_numbers(tmp_path: Path) -> None:
    figures = _load(ROOT / "tools" / "make_figures.py")
    table = json.loads((DATA / "perf_family.json").read_text())
    first = figures.grouped_bars(table, "model", ["training step"], "ratio", tmp_path / "a.png")
    table["rows"][1][3] *= 3  # rdnet_tiny's training step
    second = figures.grouped_bars(table, "model", ["training step"], "ratio", tmp_path / "b.png")
    assert first.read_bytes() != second.read_bytes()


def test_pages_embed_tables_from_the_data_files() -> None:
    hooks = _load(ROOT / "docs" / "hooks.py")
    page = hooks.on_page_markdown("before\n<!-- data-table: perf_depth -->\nafter", None, None, None)
    assert "| depth | state | plain activation | memory-efficient activation |" in page
    assert "| 400 | 108.6 | 1752 | 156.1 |" in page
    assert "densevision benchmark depth" in page and "2026-11-29" in page
    with pytest.raises(FileNotFoundError, match="no docs/results/data/nothing.json"):
        hooks.on_page_markdown("<!-- data-table: nothing -->", None, None, None)


def test_subcommands_are_read_from_a_usage_line() -> None:
    reference = _load(ROOT / "tools" / "command_reference.py")
    assert reference.subcommands("usage: densevision convert [-h] {yolo2coco,masks2coco} ...\n\nx") == [
        "yolo2coco",
        "masks2coco",
    ]
    assert reference.subcommands("usage: densevision demo [segmentation|detection] [options]") == [
        "segmentation",
        "detection",
    ]
    # an option's choices are not subcommands
    assert reference.subcommands("usage: densevision export [-h] [--format {onnx,torchscript,both}]") == []


def test_help_text_is_the_commands_own() -> None:
    reference = _load(ROOT / "tools" / "command_reference.py")
    text = reference.help_text(["zoo"])
    assert text.startswith("usage: densevision zoo")
    assert "--markdown" in text


def test_readme_links_and_pictures_exist() -> None:
    # mkdocs --strict checks the site's links; the README lies outside it, so its own are checked here.
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert "docs/assets/demo_prediction.png" in local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    picture = ROOT / "docs" / "assets" / "demo_prediction.png"
    assert picture.stat().st_size < 200_000
