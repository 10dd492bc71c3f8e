"""The commands' inference switches (``densevision.apps.inference_args``), moved out of the library."""

from __future__ import annotations

import argparse

from densevision.apps.inference_args import add_inference_arguments


def test_inference_arguments():
    parser = argparse.ArgumentParser()
    add_inference_arguments(parser)
    assert vars(parser.parse_args([])) == {"optimize": True, "bf16": None, "compile": False}
    args = parser.parse_args(["--no-optimize", "--no-bf16", "--compile"])
    assert (args.optimize, args.bf16, args.compile) == (False, False, True)
