"""ONNX node conformance: every case listed in conformance_passing.txt must keep passing.

Regenerate the list with
    python benchmarks/onnx_conformance.py -j 2 --write-passing tests/onnx/conformance_passing.txt
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import pytest

HERE = Path(__file__).parent
PASSING = HERE / "conformance_passing.txt"
HARNESS = HERE.parent.parent / "benchmarks" / "onnx_conformance.py"


def _harness():
    spec = importlib.util.spec_from_file_location("onnx_conformance", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_passing_conformance_case_regresses():
    names = [n.strip() for n in PASSING.read_text().splitlines() if n.strip()]
    assert len(names) > 500, "the passing list is unexpectedly short"
    harness = _harness()
    cases = harness.load_cases()
    missing = [n for n in names if n not in cases]
    assert not missing, f"cases no longer in onnx's test set: {missing[:10]}"
    failures = {}
    with jax.enable_x64(True):  # ONNX computes in int64/double, as the harness does
        for n in names:
            res = harness.run_case(cases[n])
            if res["status"] != "pass":
                failures[n] = res["message"].splitlines()[0][:300]
    if failures:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        pytest.fail(f"{len(failures)} of {len(names)} previously passing ONNX node cases "
                    f"regressed:\n{lines}")
