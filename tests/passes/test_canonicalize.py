"""canonicalize: golden IR text for what must rewrite and what must not, plus numerics."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import assert_same_numerics, ir, remarks, run  # noqa: E402

from tensorsmith.passes import PassContext, PassOptionError, run_pipeline  # noqa: E402
from tensorsmith.ir import parse  # noqa: E402

PIPELINE = "canonicalize"


def _params(**shapes):
    """A factory of named params: ``ones*``/``zeros*`` filled so, the rest random."""
    def make():
        r = np.random.default_rng(7)
        out = {}
        for name, shape in shapes.items():
            fill = np.ones if name.startswith("ones") else np.zeros if name.startswith("zeros") else None
            out[name] = (fill(shape) if fill else r.standard_normal(shape)).astype(np.float32)
        return out
    return make


CASES = [
    pytest.param("""
        graph @main(%x: f32[4]) {
          %0: f32[] = constant() {dtype="f32", value=1.0}
          %1: f32[4] = mul(%x, %0)
          %2: f32[4] = mul(%0, %1)
          return %2
        }
        """, None, """
        graph @main(%x: f32[4]) {
          return %x
        }
        """, id="mul-by-one-either-side"),
    pytest.param("""
        graph @main(%x: i32[4]) {
          %0: i32[] = constant() {dtype="i32", value=1}
          %1: i32[4] = mul(%x, %0)
          return %1
        }
        """, None, """
        graph @main(%x: i32[4]) {
          return %x
        }
        """, id="mul-by-one-int"),
    pytest.param("""
        graph @main(%x: f32[4]) {
          param @ones: f32[3,4]
          %0: f32[3,4] = mul(%x, @ones)
          return %0
        }
        """, _params(ones=(3, 4)), """
        graph @main(%x: f32[4]) {
          param @ones: f32[3,4]  # 12 elems, 48 B, 0.0% zero
          %0: f32[3,4] = mul(%x, @ones)
          return %0
        }
        """, id="mul-by-ones-that-broadcast-is-kept"),
    pytest.param("""
        graph @main(%x: f32[2,3]) {
          %0: f32[] = constant() {dtype="f32", value=0.0}
          %1: f32[] = constant() {dtype="f32", value=1.0}
          %2: f32[2,3] = add(%0, %x)
          %3: f32[2,3] = sub(%2, %0)
          %4: f32[2,3] = div(%3, %1)
          %5: f32[2,3] = sub(%0, %4)
          %6: f32[2,3] = div(%1, %5)
          return %6
        }
        """, None, """
        graph @main(%x: f32[2,3]) {
          %0: f32[] = constant() {dtype="f32", value=0.0}
          %1: f32[] = constant() {dtype="f32", value=1.0}
          %5: f32[2,3] = sub(%0, %x)
          %6: f32[2,3] = div(%1, %5)
          return %6
        }
        """, id="add-sub-div-identities-but-not-0-minus-x-or-1-over-x"),
    pytest.param("""
        graph @main(%a: f16[4], %b: f32[4], %c: i8[4]) {
          %0: f16[4] = convert(%a) {dtype="f16"}
          %1: f32[4] = convert(%0) {dtype="f32"}
          %2: f16[4] = convert(%1) {dtype="f16"}
          %3: f16[4] = convert(%b) {dtype="f16"}
          %4: f32[4] = convert(%3) {dtype="f32"}
          %5: i32[4] = convert(%c) {dtype="i32"}
          %6: f32[4] = convert(%5) {dtype="f32"}
          return %2, %4, %6
        }
        """, None, """
        graph @main(%a: f16[4], %b: f32[4], %c: i8[4]) {
          %3: f16[4] = convert(%b) {dtype="f16"}
          %4: f32[4] = convert(%3) {dtype="f32"}
          %7: f32[4] = convert(%c) {dtype="f32"}
          return %a, %4, %7
        }
        """, id="convert-chains-only-where-exact"),
    pytest.param("""
        graph @main(%x: f32[2,3,4]) {
          %0: f32[2,3,4] = reshape(%x) {shape=(2, 3, 4)}
          %1: f32[6,4] = reshape(%0) {shape=(6, 4)}
          %2: f32[24] = reshape(%1) {shape=(24,)}
          %3: f32[6,4] = reshape(%x) {shape=(6, 4)}
          %4: f32[2,3,4] = reshape(%3) {shape=(2, 3, 4)}
          return %2, %4
        }
        """, None, """
        graph @main(%x: f32[2,3,4]) {
          %5: f32[24] = reshape(%x) {shape=(24,)}
          return %5, %x
        }
        """, id="reshape-chains"),
    pytest.param("""
        graph @main(%x: f32[2,3,4], %y: f32[3,3]) {
          %0: f32[2,3,4] = transpose(%x) {permutation=(0, 1, 2)}
          %1: f32[3,4,2] = transpose(%0) {permutation=(1, 2, 0)}
          %2: f32[2,3,4] = transpose(%1) {permutation=(2, 0, 1)}
          %3: f32[4,2,3] = transpose(%1) {permutation=(1, 2, 0)}
          %4: f32[3,3] = transpose(%y) {permutation=(1, 0)}
          return %2, %3, %4
        }
        """, None, """
        graph @main(%x: f32[2,3,4], %y: f32[3,3]) {
          %5: f32[4,2,3] = transpose(%x) {permutation=(2, 0, 1)}
          %4: f32[3,3] = transpose(%y) {permutation=(1, 0)}
          return %x, %5, %4
        }
        """, id="transpose-pairs-cancel-or-merge-square-transpose-kept"),
    pytest.param("""
        graph @main(%x: f32[2,3]) {
          %0: f32[2,3] = broadcast_in_dim(%x) {broadcast_dimensions=(0, 1), shape=(2, 3)}
          %1: f32[2,3] = slice(%0) {limit=(2, 3), start=(0, 0), strides=(1, 1)}
          %2: f32[] = constant() {dtype="f32", value=0.0}
          %3: f32[2,3] = pad(%1, %2) {high=(0, 0), interior=(0, 0), low=(0, 0)}
          %4: f32[1,3] = slice(%3) {limit=(2, 3), start=(1, 0)}
          %5: f32[2,5] = pad(%3, %2) {high=(0, 1), low=(0, 1)}
          %6: f32[2,3] = pad(%3, %2) {high=(0, -1), low=(0, 1)}
          return %4, %5, %6
        }
        """, None, """
        graph @main(%x: f32[2,3]) {
          %2: f32[] = constant() {dtype="f32", value=0.0}
          %4: f32[1,3] = slice(%x) {limit=(2, 3), start=(1, 0)}
          %5: f32[2,5] = pad(%x, %2) {high=(0, 1), low=(0, 1)}
          %6: f32[2,3] = pad(%x, %2) {high=(0, -1), low=(0, 1)}
          return %4, %5, %6
        }
        """, id="no-op-broadcast-slice-pad-dropped-real-ones-kept"),
    pytest.param("""
        graph @main(%x: f32[2,1,3]) {
          %0: f32[2,1,3] = reduce_sum(%x) {axes=()}
          %1: f32[2,1,3] = reduce_max(%0) {axes=(1,), keepdims=true}
          %2: f32[2,1,3] = rev(%1) {axes=(1,)}
          %3: f32[2,1,3] = rev(%2) {axes=(2,)}
          %4: f32[2,1,3] = concatenate(%3) {axis=0}
          %5: f32[2,3] = reduce_sum(%4) {axes=(1,)}
          return %5
        }
        """, None, """
        graph @main(%x: f32[2,1,3]) {
          %3: f32[2,1,3] = rev(%x) {axes=(2,)}
          %5: f32[2,3] = reduce_sum(%3) {axes=(1,)}
          return %5
        }
        """, id="reductions-and-rev-over-nothing"),
    pytest.param("""
        graph @main(%x: f32[4]) {
          param @zeros: f32[3,4]
          %0: f32[] = constant() {dtype="f32", value=0.0}
          %1: f32[4] = max(%x, %0)
          %2: f32[4] = max(%0, %1)
          %3: f32[] = constant() {dtype="f32", value=0.5}
          %4: f32[4] = max(%2, %3)
          %5: f32[3,4] = max(%4, @zeros)
          return %5
        }
        """, _params(zeros=(3, 4)), """
        graph @main(%x: f32[4]) {
          param @zeros: f32[3,4]  # 12 elems, 48 B, 100.0% zero
          %6: f32[4] = relu(%x)
          %3: f32[] = constant() {dtype="f32", value=0.5}
          %4: f32[4] = max(%6, %3)
          %5: f32[3,4] = max(%4, @zeros)
          return %5
        }
        """, id="max-zero-is-relu-but-not-max-half-or-broadcasting"),
    pytest.param("""
        graph @main(%x: f32[2,4], %s: f32[2]) {
          param @w: f32[4,3]
          param @b: f32[3]
          param @c: f32[3]
          %0: f32[2,3] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
          %1: f32[1,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 3)}
          %2: f32[2,3] = add(%0, %1)
          %3: f32[2,1] = broadcast_in_dim(%s) {broadcast_dimensions=(0,), shape=(2, 1)}
          %4: f32[2,3] = mul(%2, %3)
          %5: f32[2,3] = sub(%1, %4)
          %6: f32[1,3] = add(%1, @c)
          return %5, %6
        }
        """, _params(w=(4, 3), b=(3,), c=(3,)), """
        graph @main(%x: f32[2,4], %s: f32[2]) {
          param @w: f32[4,3]  # 12 elems, 48 B, 0.0% zero
          param @b: f32[3]  # 3 elems, 12 B, 0.0% zero
          param @c: f32[3]  # 3 elems, 12 B, 0.0% zero
          %0: f32[2,3] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
          %1: f32[1,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 3)}
          %7: f32[2,3] = add(%0, @b)
          %3: f32[2,1] = broadcast_in_dim(%s) {broadcast_dimensions=(0,), shape=(2, 1)}
          %4: f32[2,3] = mul(%7, %3)
          %8: f32[2,3] = sub(@b, %4)
          %6: f32[1,3] = add(%1, @c)
          return %8, %6
        }
        """, id="bias-broadcast-dropped-only-where-numpy-agrees"),
    pytest.param("""
        graph @main(%x: f32[4], %y: f32[4]) {
          %0: f32[4] = neg(%y)
          %1: f32[4] = sub(%x, %0)
          %2: f32[4] = add(%1, %0)
          %3: f32[4] = add(%0, %2)
          %4: f32[4] = neg(%3)
          %5: f32[4] = neg(%4)
          return %5
        }
        """, None, """
        graph @main(%x: f32[4], %y: f32[4]) {
          %6: f32[4] = add(%x, %y)
          %7: f32[4] = sub(%6, %y)
          %8: f32[4] = sub(%7, %y)
          return %8
        }
        """, id="negations"),
    pytest.param("""
        graph @main(%x: f32[4], %y: f32[4]) {
          %0: f32[4] = mul(%x, %x)
          %1: f32[4] = integer_pow(%0) {y=1}
          %2: f32[4] = integer_pow(%1) {y=2}
          %3: f32[4] = integer_pow(%2) {y=3}
          %4: f32[4] = mul(%3, %y)
          %5: f32[4] = abs(%4)
          %6: f32[4] = abs(%5)
          %7: f32[4] = round(%6) {method="half_to_even"}
          %8: f32[4] = round(%7) {method="half_away_from_zero"}
          return %8
        }
        """, None, """
        graph @main(%x: f32[4], %y: f32[4]) {
          %9: f32[4] = square(%x)
          %10: f32[4] = square(%9)
          %3: f32[4] = integer_pow(%10) {y=3}
          %4: f32[4] = mul(%3, %y)
          %5: f32[4] = abs(%4)
          %7: f32[4] = round(%5) {method="half_to_even"}
          %8: f32[4] = round(%7) {method="half_away_from_zero"}
          return %8
        }
        """, id="squares-and-idempotent-ops"),
    pytest.param("""
        graph @main(%x: f32[4]) {
          param @b: f32[4]
          %0: f32[] = constant() {dtype="f32", value=2.0}
          %1: f32[4] = add(@b, %x)
          %2: f32[4] = mul(%0, %1)
          %3: f32[4] = max(%0, @b)
          %4: f32[4] = sub(@b, %2)
          %5: f32[4] = min(%4, %3)
          return %5
        }
        """, _params(b=(4,)), """
        graph @main(%x: f32[4]) {
          param @b: f32[4]  # 4 elems, 16 B, 0.0% zero
          %0: f32[] = constant() {dtype="f32", value=2.0}
          %6: f32[4] = add(%x, @b)
          %7: f32[4] = mul(%6, %0)
          %8: f32[4] = max(@b, %0)
          %4: f32[4] = sub(@b, %7)
          %5: f32[4] = min(%4, %8)
          return %5
        }
        """, id="constants-go-right-in-commutative-ops-only"),
]


@pytest.mark.parametrize("text, params, expected", CASES)
def test_golden_ir(text, params, expected):
    _, out, _ = run(text, PIPELINE, params=params() if params else None)
    assert out.to_text() == ir(expected)


@pytest.mark.parametrize("text, params, expected", CASES)
def test_rewrites_keep_numerics(text, params, expected):
    before, out, _ = run(text, PIPELINE, params=params() if params else None)
    assert_same_numerics(before, out)


@pytest.mark.parametrize("text, params, expected", CASES)
def test_canonical_form_is_a_fixpoint(text, params, expected):
    _, once, _ = run(text, PIPELINE, params=params() if params else None)
    twice, _ = run_pipeline(once, PIPELINE, PassContext())
    assert twice.to_text() == once.to_text()


def _case(case_id):
    return next(c.values for c in CASES if c.id == case_id)


@pytest.mark.parametrize("case_id, expected", [
    ("mul-by-ones-that-broadcast-is-kept",
     "[canonicalize] missed: %0: did not drop mul by 1: result f32[3,4] differs from operand %x "
     "f32[4] (broadcasting)"),
    ("max-zero-is-relu-but-not-max-half-or-broadcasting",
     "[canonicalize] missed: %4: max with constant 0.5 is not relu (needs 0)"),
    ("bias-broadcast-dropped-only-where-numpy-agrees",
     "[canonicalize] missed: %4: did not drop broadcast %3: it maps operand dims to (0,), not the "
     "trailing dims numpy broadcasting aligns"),
    ("bias-broadcast-dropped-only-where-numpy-agrees",
     "[canonicalize] missed: %6: did not drop broadcast %1: the other operand @c f32[3] lacks the "
     "result shape f32[1,3]"),
    ("convert-chains-only-where-exact",
     "[canonicalize] missed: %4: did not merge converts %3, %4 (f32->f16->f32): f16 cannot hold "
     "every f32 value, so the chain rounds"),
])
def test_near_misses_explain_themselves_once(case_id, expected):
    text, params, _ = _case(case_id)
    # these graphs need several sweeps to settle; each near-miss is still reported once
    _, _, ctx = run(text, PIPELINE, params=params() if params else None)
    assert remarks(ctx, "missed").count(expected) == 1


def test_applied_remarks_name_their_pattern():
    text, params, _ = _case("bias-broadcast-dropped-only-where-numpy-agrees")
    _, _, ctx = run(text, PIPELINE, params=params())
    applied = [r for r in ctx.remarks if r.kind == "applied"]
    assert [dict(r.data)["pattern"] for r in applied] == ["drop-broadcast-operand"] * 2
    assert [r.node for r in applied] == ["%2", "%5"]


def test_disable_option_leaves_a_pattern_out():
    text, _, _ = _case("max-zero-is-relu-but-not-max-half-or-broadcasting")
    params = {"zeros": np.zeros((3, 4), np.float32)}
    _, out, _ = run(text, "canonicalize{disable=[max-zero-to-relu,idempotent]}", params=params)
    assert "relu" not in out.to_text()
    _, out, _ = run(text, "canonicalize{disable=idempotent}", params=params)
    assert out.to_text().count("relu(") == 2  # relu(relu(x)) stays


def test_disable_option_names_the_closest_pattern():
    graph = parse(ir(_case("mul-by-one-int")[0]))
    # refused while the pipeline is parsed, before any pass runs
    with pytest.raises(PassOptionError, match="no pattern 'max-zero-relu' .*did you mean 'max-zero-to-relu'"):
        run_pipeline(graph, "canonicalize{disable=max-zero-relu}")


def test_symbolic_batch_dims_are_handled():
    text = """
        graph @main(%x: f32[N,3]) {
          param @b: f32[3]
          %0: f32[1,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 3)}
          %1: f32[N,3] = add(%x, %0)
          %2: f32[3,N] = transpose(%1) {permutation=(1, 0)}
          %3: f32[N,3] = transpose(%2) {permutation=(1, 0)}
          %4: f32[N,3] = reshape(%3) {shape=("N", 3)}
          return %4
        }
        """
    _, out, _ = run(text, PIPELINE, params={"b": np.ones(3, np.float32)})
    assert out.to_text() == ir("""
        graph @main(%x: f32[N,3]) {
          param @b: f32[3]  # 3 elems, 12 B, 0.0% zero
          %5: f32[N,3] = add(%x, @b)
          return %5
        }
        """)
