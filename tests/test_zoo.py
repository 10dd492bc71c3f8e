from __future__ import annotations

import pytest

import densevision
from densevision.apps.zoo import END, START, count_flops, select_models
from densevision.cli import main


def test_zoo_writes_the_table_between_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold table\n{END}\n\nafter\n")
    assert main(["zoo", "--models", "densenet40_k12", "--repeats", "1", "--markdown", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.endswith("after\n")
    params = sum(p.numel() for p in densevision.create_model("densenet40_k12").parameters())
    row = next(line for line in text.splitlines() if line.startswith("| `densenet40_k12`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["classifier", f"{params / 1e6:.2f}M", "32"]
    assert float(cells[4]) > 0 and float(cells[5]) > 0
    assert "median of 1" in text and "wrote the table of 1 models" in capsys.readouterr().out


def test_flops_count_a_known_layer():
    import torch

    conv = torch.nn.Conv2d(3, 8, kernel_size=1, bias=False)
    assert count_flops(conv, torch.randn(1, 3, 4, 5)) == 2 * 3 * 8 * 4 * 5  # 2 FLOPs per multiply-add


def test_zoo_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--models \['nothing\*'\] matches no registered model"):
        select_models(["nothing*"])
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["zoo", "--models", "densenet40_k12", "--no-latency", "--markdown", str(readme)]) == 1
    assert "README.md: no '<!-- zoo:start -->'" in capsys.readouterr().err
