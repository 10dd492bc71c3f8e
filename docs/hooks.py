"""MkDocs hooks: pages and pictures generated at build time, so they follow the code and the data.

- ``reference/commands.md``: every command's ``--help`` (tools/command_reference.py);
- ``assets/figures/*.png``: figures drawn from docs/results/data by tools/make_figures.py;
- ``<!-- data-table: NAME -->`` in a page: the table of docs/results/data/NAME.json with its CPU, date and
  command, so a measured figure is typed once (in its data file) and the page, table and chart agree.

Nothing is written into docs/: the files are handed to MkDocs in memory.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "results" / "data"
_TABLE = re.compile(r"<!-- data-table: ([\w-]+) -->")


def _tool(name: str):
    """Import tools/<name>.py (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"densevision_docs_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config) -> Files:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    page = _tool("command_reference").command_reference()
    files.append(File.generated(config, "reference/commands.md", content=page))
    with tempfile.TemporaryDirectory() as tmp:
        for path in _tool("make_figures").make_figures(ROOT / "docs" / "results" / "data", Path(tmp)):
            files.append(File.generated(config, f"assets/figures/{path.name}", content=path.read_bytes()))
    return files


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value).replace("|", "\\|")


def data_table(name: str) -> str:
    """The Markdown table of docs/results/data/<name>.json, then where and how it was measured."""
    path = DATA / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"<!-- data-table: {name} -->: no {path.relative_to(ROOT)}; add it or fix the name"
        )
    table = json.loads(path.read_text())
    lines = ["| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table["rows"]]
    lines += [
        "",
        f"*{table['cpu']}; {table['date']}.* Command: `{table['command']}`. "
        f"{table.get('notes', '')} Data: `docs/results/data/{name}.json`.",
    ]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return _TABLE.sub(lambda m: data_table(m.group(1)), markdown)
