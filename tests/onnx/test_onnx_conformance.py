"""ONNX node conformance: every case listed in conformance_passing.txt must keep passing.

Regenerate the list with
    python benchmarks/onnx_conformance.py -j 2 --write-passing tests/onnx/conformance_passing.txt
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PASSING = HERE / "conformance_passing.txt"
HARNESS = HERE.parent.parent / "benchmarks" / "onnx_conformance.py"


def _harness():
    spec = importlib.util.spec_from_file_location("onnx_conformance", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SHARDS = 4  # several tests, so a regression report stays short and shards can run in parallel


@pytest.fixture(scope="module")
def harness_and_cases():
    harness = _harness()
    return harness, harness.load_cases()


def _passing() -> list[str]:
    return [n.strip() for n in PASSING.read_text().splitlines() if n.strip()]


def test_passing_list_is_current(harness_and_cases):
    _, cases = harness_and_cases
    names = _passing()
    assert len(names) > 1000, "the passing list is unexpectedly short"
    missing = [n for n in names if n not in cases]
    assert not missing, f"cases no longer in onnx's test set: {missing[:10]}"


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_passing_conformance_case_regresses(harness_and_cases, shard):
    harness, cases = harness_and_cases
    names = [n for n in _passing()[shard::SHARDS] if n in cases]
    failures = {}
    for n in names:
        res = harness.run_case(cases[n])
        if res["status"] != "pass":
            failures[n] = res["message"].splitlines()[0][:300]
    if failures:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        pytest.fail(f"{len(failures)} of {len(names)} previously passing ONNX node cases "
                    f"regressed:\n{lines}")
