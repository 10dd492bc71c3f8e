"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data lies beside the repository (../shared/data); CI has it too. DENSEVISION_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("DENSEVISION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Under pytest-xdist (``make test``: ``-n 2``) each worker process gets one core's worth of threads, so the
# workers do not fight over the cores; run alone, the suite uses up to two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped (with the reason) where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DENSEVISION_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (end-to-end runs of tens of seconds) run first, in file order.

    pytest-xdist's worksteal hands each worker a contiguous share of this order and lets an idle worker take
    the tail of another's queue: with the long runs at the head, the short tests are what is left at the
    end to even out the two workers, rather than a minute-long walk started last. Mark a test ``slow`` only
    when no module-scoped fixture of its file is shared with unmarked tests (they would be split apart).
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
