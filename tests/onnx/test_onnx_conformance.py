"""ONNX node conformance: every case listed in conformance_passing.txt must keep passing on
the compile-once path (compile the model alone, then call it with each data set).

By default a representative subset runs (every SUBSET_EVERY-th listed case plus the first
case of each op family), so the default test run stays short; the full list runs under
``-m slow``. Regenerate the list with
    python benchmarks/onnx_conformance.py -j 2 --write-passing tests/onnx/conformance_passing.txt
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PASSING = HERE / "conformance_passing.txt"
HARNESS = HERE.parent.parent / "benchmarks" / "onnx_conformance.py"
SUBSET_EVERY = 15
SHARDS = 4  # several tests, so a regression report stays short and shards can run in parallel


def _harness():
    spec = importlib.util.spec_from_file_location("onnx_conformance", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def harness_and_cases():
    harness = _harness()
    return harness, harness.load_cases()


def _passing() -> list[str]:
    return [n.strip() for n in PASSING.read_text().splitlines() if n.strip()]


def _family(case) -> str:
    """The op a case tests: its model's first node that is not a Constant."""
    import onnx
    model = case.model if case.model is not None else onnx.load(
        os.path.join(case.model_dir, "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    return ops[0] if ops else "Constant"


def subset(names: list[str], cases: dict) -> list[str]:
    """Every SUBSET_EVERY-th name, plus the first name of each op family not yet in."""
    chosen = set(names[::SUBSET_EVERY])
    seen = {_family(cases[n]) for n in chosen}
    for n in names:
        fam = _family(cases[n])
        if fam not in seen:
            seen.add(fam)
            chosen.add(n)
    return [n for n in names if n in chosen]


def _check(harness, cases, names):
    failures = {}
    for n in names:
        res = harness.run_case(cases[n], "once")
        if res["status"] != "pass":
            failures[n] = res["message"].splitlines()[0][:300]
    if failures:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(failures.items()))
        pytest.fail(f"{len(failures)} of {len(names)} previously passing ONNX node cases "
                    f"regressed (compile once, call with each data set):\n{lines}")


def test_passing_list_is_current(harness_and_cases):
    _, cases = harness_and_cases
    names = _passing()
    assert len(names) > 1000, "the passing list is unexpectedly short"
    missing = [n for n in names if n not in cases]
    assert not missing, f"cases no longer in onnx's test set: {missing[:10]}"


@pytest.mark.parametrize("shard", range(SHARDS))
def test_representative_conformance_cases_do_not_regress(harness_and_cases, shard):
    harness, cases = harness_and_cases
    names = [n for n in _passing() if n in cases]
    _check(harness, cases, subset(names, cases)[shard::SHARDS])


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_passing_conformance_case_regresses(harness_and_cases, shard):
    harness, cases = harness_and_cases
    _check(harness, cases, [n for n in _passing()[shard::SHARDS] if n in cases])
