"""Every ```python and ```bash example in README.md and docs/ runs, so the documentation cannot rot.

The blocks of one section of a page (the text under one ``## `` heading) run in order in one fresh folder
(a later block may use what an earlier one wrote, as a reader would); sections are separate tests, so they
run side by side under pytest-xdist. Consecutive Python blocks share one subprocess, each block in a
namespace of its own; shell blocks run with ``bash -e`` and a ``densevision`` on PATH that is this
checkout's. The folder holds ``configs/`` (this repository's) and ``images/`` (three small generated
photos). A block that cannot run here (a download, a 28-minute training, real data) is preceded by
``<!-- docs-test: skip (why) -->``; a skip without a reason is an error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*\Z", re.DOTALL)
SECTION = re.compile(r"^## +(.+?)\s*$", re.MULTILINE)
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}


@dataclass
class Example:
    path: Path
    line: int
    language: str  # "python" or "bash"
    code: str
    skip: str | None  # the reason, when marked skip
    section: str = ""  # the ``## `` heading the block is under

    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def examples(path: Path) -> list[Example]:
    """The runnable blocks of a Markdown file, with the skip marker written just above each."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        language = LANGUAGES.get(match.group(1).lower())
        if language is None:
            continue
        before = text[: match.start()].rstrip()
        marker = MARKER.search(before[-300:])
        skip = None
        if marker:
            if marker.group(1) != "skip":
                raise ValueError(
                    f"{path}: unknown docs-test marker {marker.group(1)!r}; only 'skip (reason)'"
                )
            skip = marker.group(2).strip("() ")
            if not skip:
                raise ValueError(
                    f"{path}: a docs-test skip above line {text[: match.start()].count(chr(10)) + 1} "
                    "gives no reason; write <!-- docs-test: skip (why) -->"
                )
        line = text[: match.start()].count("\n") + 1
        headings = SECTION.findall(text[: match.start()])
        found.append(Example(path, line, language, match.group(2), skip, headings[-1] if headings else ""))
    return found


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _workspace(folder: Path) -> dict[str, str]:
    """A reader's folder: configs/, images/ and a PATH whose densevision and python are this checkout's."""
    (folder / "configs").symlink_to(ROOT / "configs")
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(
            images / f"photo{i}.png"
        )
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    for name, command in (
        ("densevision", f'"{sys.executable}" -m densevision'),
        ("python", f'"{sys.executable}"'),
    ):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"  # the suite runs tests side by side: one thread each
    env["MPLBACKEND"] = "Agg"
    return env


# Runs each Python block in its own namespace and says which one failed (by its line in the page).
_PYTHON_DRIVER = """
import sys, traceback
blocks = {blocks!r}
for line, code in blocks:
    print(f"--- block at line {{line}}", flush=True)
    try:
        exec(compile(code, f"{path}:{{line}}", "exec"), {{"__name__": "__main__"}})
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {path}:{{line}}", file=sys.stderr)
        sys.exit(1)
"""


def _run_python(blocks: list[Example], folder: Path, env: dict[str, str]) -> None:
    driver = _PYTHON_DRIVER.format(blocks=[(b.line, b.code) for b in blocks], path=_shown(blocks[0].path))
    result = subprocess.run(
        [sys.executable, "-c", driver], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"a Python example failed\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


def _run_bash(block: Example, folder: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"the shell example at {block.where()} failed (exit {result.returncode}):\n"
        f"{block.code}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


def _run(example_file: Path, folder: Path, section: str | None = None) -> list[str]:
    """Runs the blocks of the file (or of one of its sections) in order in ``folder``; returns the skip
    reasons. Fails at the first failing block.

    Consecutive Python blocks share one interpreter (one torch import), each with its own namespace.
    """
    env = _workspace(folder)
    blocks = [b for b in examples(example_file) if section is None or b.section == section]
    pending: list[Example] = []
    for block in (b for b in blocks if not b.skip):
        if block.language == "python":
            pending.append(block)
            continue
        if pending:
            _run_python(pending, folder, env)
            pending = []
        _run_bash(block, folder, env)
    if pending:
        _run_python(pending, folder, env)
    return [f"{b.where()}: {b.skip}" for b in blocks if b.skip]


def _sections() -> list[tuple[Path, str]]:
    """(page, section) for every section with a block to run, in reading order."""
    found: dict[tuple[Path, str], None] = {}
    for page in markdown_files():
        for example in examples(page):
            if not example.skip:
                found[(page, example.section)] = None
    return list(found)


SECTIONS = _sections()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "section"), SECTIONS, ids=[f"{_shown(p)}::{s or 'top'}" for p, s in SECTIONS]
)
def test_examples_run(page: Path, section: str, tmp_path: Path) -> None:
    skipped = _run(page, tmp_path, section)
    for reason in skipped:  # shown by pytest -rA, so each skip's reason stays visible
        print("skipped:", reason)


def test_every_skip_gives_a_reason() -> None:
    # examples() raises on a skip marker without a reason; a reason is a few words, not a placeholder.
    for page in markdown_files():
        for example in examples(page):
            assert example.skip is None or len(example.skip.split()) >= 3, f"{example.where()}: say why"


def test_runner_reads_markers_and_reports_the_failing_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent("""\
        <!-- docs-test: skip (needs the network) -->
        ```bash
        curl https://example.com
        ```

        ```python
        print(2 + 2)
        ```

        ```python
        raise SystemExit("boom")
        ```
        """)
    )
    found = examples(page)
    assert [(e.language, e.skip) for e in found] == [
        ("bash", "needs the network"),
        ("python", None),
        ("python", None),
    ]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    with pytest.raises(AssertionError, match=r"FAILED: the block at page.md:10"):
        _run(page, workspace)
    page.write_text("<!-- docs-test: skip -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="gives no reason"):
        examples(page)
