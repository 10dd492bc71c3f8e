"""The floors of the package: the library (models, datasets, tasks, inference, ...) never imports the
commands (``densevision.apps``, ``densevision.cli``), and the applications never import the dispatcher
``densevision.cli`` (it imports them)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "densevision"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_the_library_imports_neither_the_applications_nor_the_dispatcher() -> None:
    commands = ("densevision.apps", "densevision.cli", "densevision.__main__")
    library = [p for p in PACKAGE.rglob("*.py") if not _module(p).startswith(commands)]
    assert len(library) > 20
    wrong = {
        _module(p): sorted(n for n in _imports(p) if n.startswith(commands))
        for p in library
        if any(n.startswith(commands) for n in _imports(p))
    }
    assert wrong == {}


def test_the_applications_do_not_import_the_dispatcher() -> None:
    apps = sorted((PACKAGE / "apps").glob("*.py"))
    wrong = {_module(p) for p in apps if any(n.startswith("densevision.cli") for n in _imports(p))}
    assert wrong == set()
