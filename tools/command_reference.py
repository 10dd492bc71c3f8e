"""Write the command reference (docs/reference/commands.md) from the commands' own ``--help``.

Each command's help is produced by its parser, in process, through the public entry point
``densevision.cli.main``: the page cannot drift from the code. Run by the documentation build (the
mkdocs hook in docs/hooks.py) or by hand: ``python tools/command_reference.py [OUT.md]``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

# The Lightning subcommands share one parser; fit's help lists every Trainer, task and data option.
LIGHTNING = ("fit", "validate", "test", "predict")


def help_text(argv: list[str]) -> str:
    """The text ``densevision <argv> --help`` prints (stdout and stderr, exit code ignored)."""
    from densevision.cli import main

    out = io.StringIO()
    # argparse wraps at $COLUMNS: fix it (to the page's code width) so the page is the same everywhere.
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    # LightningCLI names the program after sys.argv[0]: make it the command a user types.
    saved, sys.argv[0] = sys.argv[0], "densevision"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main([*argv, "--help"])
    except SystemExit:
        pass
    finally:
        sys.argv[0] = saved
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip()


def subcommands(text: str) -> list[str]:
    """Subcommand names from a usage line: argparse's ``{a,b}`` or a hand-written ``[a|b]``."""
    usage = text.split("\n\n", 1)[0]
    # `{a,b} ...` is a subparsers' positional; an option's choices (`--format {onnx,both}`) are not.
    found = re.search(r"(?:^|\s)\{([\w,-]+)\}\s+\.\.\.", usage) or re.search(
        r"\[([a-z]+(?:\|[a-z]+)+)\]", usage
    )
    return re.split(r"[,|]", found.group(1)) if found else []


def command_reference() -> str:
    """The Markdown page: the top-level usage, then every command and subcommand's ``--help``."""
    from densevision.apps import APPS, packaged_config

    lines = [
        "# Command reference",
        "",
        "Generated when the documentation is built, from each command's own `--help` "
        "(`tools/command_reference.py`); what you read here is what the installed version prints.",
        "",
        "```text",
        help_text([]),
        "```",
    ]
    for command in (*LIGHTNING, *APPS):
        # Without --config, `densevision predict` is `infer` (a checkpoint on image files).
        argv = (
            [command, "--config", str(packaged_config("segmentation/demo.yaml"))]
            if command == "predict"
            else [command]
        )
        title = "predict --config CONFIG" if command == "predict" else command
        text = help_text(argv)
        lines += ["", f"## densevision {title}", "", "```text", text, "```"]
        for sub in subcommands(text):
            lines += ["", f"### densevision {command} {sub}", "", "```text", help_text([command, sub]), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    page = command_reference()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(page)
    else:
        print(page)
