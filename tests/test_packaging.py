"""The built wheel works on its own: installed into an empty folder, its commands find their configs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("densevision-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".yaml")}
    in_repo = {"densevision/" + str(p.relative_to(REPO_ROOT / "densevision"))
               for p in (REPO_ROOT / "densevision" / "configs").rglob("*.yaml")}
    assert in_repo and in_repo <= shipped, sorted(in_repo - shipped)  # loss overlays in configs/*/losses too
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import densevision, sys; from densevision.cli import main; print(densevision.__file__); " \
           "sys.exit(main(sys.argv[1:]))"
    version = subprocess.run([sys.executable, "-c", code, "--version"], cwd=work, env=env, check=True,
                             capture_output=True, text=True).stdout
    assert str(site) in version and "densevision 0.1.0" in version
    demo = subprocess.run(
        # a few small images: the demo generates its data set (by default 64 test images at 96 px)
        [sys.executable, "-c", code, "demo", "--max-epochs", "1", "--data.init_args.num_train", "4",
         "--data.init_args.num_val", "2", "--data.init_args.num_test", "2",
         "--data.init_args.image_size", "32"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert list((work / "runs").rglob("*.ckpt")), "the demo wrote no checkpoint in the empty folder"
