"""``densevision configs list`` / ``densevision configs copy NAME [DEST]``: the configs shipped with the
package, found from any folder (an installed wheel has no ``configs/`` beside the working directory).

``densevision fit --config NAME`` also takes a shipped config by name (``segmentation/custom.yaml``); copy
one to edit it: ``densevision configs copy segmentation/custom.yaml my.yaml``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from densevision.log import get_logger
from densevision.tasks.lightning_cli import packaged_config, resolve_config, shipped_configs

log = get_logger(__name__)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densevision configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the shipped configs and where they are")
    copy = sub.add_parser("copy", help="copy a shipped config to DEST (default: ./<its file name>)")
    copy.add_argument("name", help="e.g. segmentation/custom.yaml (see `densevision configs list`)")
    copy.add_argument("dest", nargs="?", type=Path, default=None, help="file or folder to copy to")
    copy.add_argument("--force", action="store_true", help="replace DEST if it exists")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if args.action == "list":
        log.info(f"shipped configs (in {packaged_config('')}):")
        for name in shipped_configs():
            log.info(f"  {name}")
        log.info("use one by name (densevision fit --config segmentation/demo.yaml) or copy it to edit "
                 "(densevision configs copy segmentation/custom.yaml)")
        return 0
    name = args.name.removeprefix("configs/")
    source = packaged_config(name)
    if not source.is_file():
        source = resolve_config(name)  # a bare file name, or one sentence saying where it looked
    dest = args.dest or Path(source.name)
    dest = dest / source.name if dest.is_dir() else dest
    if dest.exists() and not args.force:
        raise FileExistsError(f"{dest} exists; pass --force to replace it, or another DEST")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    log.info(f"copied {source} to {dest}")
    return 0
