"""`densevision demo` argument routing."""

from __future__ import annotations

import sys
import types

import pytest

from densevision.apps import demo as demos


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    fake = types.ModuleType("fake_demo")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_demo", fake)
    monkeypatch.setattr(demos, "DEMOS", {"segmentation": "fake_demo", "detection": "fake_demo"})
    return calls


def test_options_without_a_task_go_to_the_segmentation_demo(recorded):
    assert demos.main(["--max-epochs", "3"]) == 0
    assert recorded == [["--max-epochs", "3"]]


def test_named_task_receives_the_rest(recorded):
    demos.main(["detection", "--max-epochs", "2"])
    assert recorded == [["--max-epochs", "2"]]


def test_unknown_task_is_named(recorded):
    with pytest.raises(SystemExit, match="unknown task 'nope'"):
        demos.main(["nope"])
