"""MkDocs hooks: pages and pictures generated at build time, so they follow the code and the data.

- ``reference/commands.md``: every command's ``--help`` (tools/command_reference.py);
- ``assets/figures/*.png``: figures drawn from docs/results/data by tools/make_figures.py.

Nothing is written into docs/: the files are handed to MkDocs in memory.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


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
