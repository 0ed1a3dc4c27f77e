"""cse: golden IR text for what must merge and what must not, plus numerics."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import assert_same_numerics, ir, remarks, run  # noqa: E402

PIPELINE = "cse"

SAME_NODES = """
    graph @main(%x: f32[4], %y: f32[4]) {
      %0: f32[4] = add(%x, %y)
      %1: f32[4] = add(%y, %x)
      %2: f32[4] = sub(%x, %y)
      %3: f32[4] = sub(%y, %x)
      %4: f32[] = constant() {dtype="f32", value=2.0}
      %5: f32[] = constant() {dtype="f32", value=2.0}
      %6: f32[] = constant() {dtype="f32", value=0.0}
      %7: f32[] = constant() {dtype="f32", value=-0.0}
      %8: f32[4] = mul(%0, %4)
      %9: f32[4] = mul(%1, %5)
      %10: f32[4] = add(%8, %6)
      %11: f32[4] = add(%9, %7)
      %12: f64[] = constant() {dtype="f64", value=2.0}
      %13: f32[2,2] = reshape(%2) {shape=(2, 2)}
      %14: f32[4,1] = reshape(%2) {shape=(4, 1)}
      return %10, %11, %3, %12, %13, %14
    }
    """


def test_merges_same_op_inputs_attrs_and_constants():
    _, out, ctx = run(SAME_NODES, PIPELINE)
    # add is commutative, sub is not; 0.0 and -0.0 are different constants; so are f32 and f64 2.0
    assert out.to_text() == ir("""
        graph @main(%x: f32[4], %y: f32[4]) {
          %0: f32[4] = add(%x, %y)
          %2: f32[4] = sub(%x, %y)
          %3: f32[4] = sub(%y, %x)
          %4: f32[] = constant() {dtype="f32", value=2.0}
          %6: f32[] = constant() {dtype="f32", value=0.0}
          %7: f32[] = constant() {dtype="f32", value=-0.0}
          %8: f32[4] = mul(%0, %4)
          %10: f32[4] = add(%8, %6)
          %11: f32[4] = add(%8, %7)
          %12: f64[] = constant() {dtype="f64", value=2.0}
          %13: f32[2,2] = reshape(%2) {shape=(2, 2)}
          %14: f32[4,1] = reshape(%2) {shape=(4, 1)}
          return %10, %11, %3, %12, %13, %14
        }
        """)
    assert remarks(ctx) == ["[cse] applied: %1: add duplicates %0",
                            "[cse] applied: %5: constant duplicates %4",
                            "[cse] applied: %9: mul duplicates %8"]


def test_merged_graph_computes_the_same():
    # (an f32 constant in place of the f64 one: jax runs without x64 here)
    text = SAME_NODES.replace('%12: f64[] = constant() {dtype="f64", value=2.0}',
                              '%12: f32[] = constant() {dtype="f32", value=3.0}')
    before, out, _ = run(text, PIPELINE)
    assert_same_numerics(before, out)


COMPOSITES = """
    graph @main(%x: f32[4]) {
      param @w: f32[4]
      %3: f32[4] = composite(%x) {name="jax.nn.relu"} {
        ^jax.nn.relu(%0: f32[4]):
          %1: f32[] = constant() {dtype="f32", value=0.0}
          %2: f32[4] = max(%0, %1)
          return %2
      }
      %7: f32[4] = composite(%x) {name="jax.nn.relu"} {
        ^jax.nn.relu(%4: f32[4]):
          %5: f32[] = constant() {dtype="f32", value=0.0}
          %6: f32[4] = max(%4, %5)
          return %6
      }
      %11: f32[4] = composite(%x) {name="jax.nn.relu"} {
        ^jax.nn.relu(%8: f32[4]):
          %9: f32[] = constant() {dtype="f32", value=0.0}
          %10: f32[4] = min(%8, %9)
          return %10
      }
      %15: f32[4] = composite(%x) {name="my.relu"} {
        ^my.relu(%12: f32[4]):
          %13: f32[] = constant() {dtype="f32", value=0.0}
          %14: f32[4] = max(%12, %13)
          return %14
      }
      %18: f32[4] = composite(%x) {name="scale"} {
        ^scale(%16: f32[4]):
          %17: f32[4] = mul(%16, @w)
          return %17
      }
      %19: f32[4] = add(%3, %7)
      %20: f32[4] = add(%11, %15)
      %21: f32[4] = add(%19, %20)
      %22: f32[4] = add(%21, %18)
      return %22
    }
    """


def test_composites_merge_when_bodies_match_up_to_names():
    _, out, ctx = run(COMPOSITES, PIPELINE, params={"w": np.arange(4, dtype=np.float32)})
    text = out.to_text()
    assert "%7: f32[4] = composite" not in text  # same name and body as %3: merged
    assert "%19: f32[4] = add(%3, %3)" in text
    for kept in ("%11: f32[4] = composite", "%15: f32[4] = composite", "%18: f32[4] = composite"):
        assert kept in text  # different body, different name, different body
    assert remarks(ctx) == ["[cse] applied: %7: composite duplicates %3"]


PARAMS_TEXT = """
    graph @main(%x: f32[4]) {
      param @a: f32[4]
      param @b: f32[4]
      param @c: f32[4]
      param @d: i32[4]
      param @e: f32[2,2]
      %0: f32[4] = mul(%x, @a)
      %1: f32[4] = mul(%x, @b)
      %2: f32[4] = add(%0, %1)
      %3: f32[4] = add(%2, @c)
      %4: i32[4] = bitcast_convert(%3) {dtype="i32"}
      %5: i32[4] = add(%4, @d)
      %6: f32[2,2] = reshape(%2) {shape=(2, 2)}
      %7: f32[2,2] = add(%6, @e)
      %10: f32[2,2] = composite(%7) {name="scale_b"} {
        ^scale_b(%8: f32[2,2]):
          %11: f32[2,2] = reshape(@b) {shape=(2, 2)}
          %9: f32[2,2] = mul(%8, %11)
          return %9
      }
      return %5, %10
    }
    """


def _dup_params():
    a = np.array([1.0, -2.0, 3.5, 0.0], np.float32)
    c = a.copy()
    c[3] = -0.0  # equal as numbers, different bytes: not merged
    return {"a": a, "b": a.copy(), "c": c, "d": a.view(np.int32).copy(), "e": a.reshape(2, 2).copy()}


def test_params_are_kept_apart_by_default():
    _, out, _ = run(PARAMS_TEXT, PIPELINE, params=_dup_params())
    assert sorted(out.params) == ["a", "b", "c", "d", "e"]


def test_params_option_merges_identical_arrays_only():
    before, out, ctx = run(PARAMS_TEXT, "cse{params=true}", params=_dup_params())
    # @b (same dtype, shape, bytes as @a) goes, also inside the composite body; @c differs in
    # one byte (-0.0), @d has @a's bytes as i32, @e has them in another shape: all kept.
    assert sorted(out.params) == ["a", "c", "d", "e"]
    text = out.to_text()
    assert "%2: f32[4] = add(%0, %0)" in text
    assert "reshape(@a) {shape=(2, 2)}" in text and "@b" not in text
    assert "[cse] note: param @b is identical to @a; merging its uses" in remarks(ctx)
    assert_same_numerics(before, out)


def test_abstract_params_are_never_merged():
    from tensorsmith.ir import parse
    from tensorsmith.passes import run_pipeline
    graph = parse(ir(PARAMS_TEXT))  # declared only: no bytes to compare
    out, _ = run_pipeline(graph, "cse{params=true}")
    assert sorted(out.params) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("pipeline", ["cse", "cse{params=true}"])
def test_cse_is_idempotent(pipeline):
    from tensorsmith.passes import PassContext, run_pipeline
    _, once, _ = run(PARAMS_TEXT, pipeline, params=_dup_params())
    twice, _ = run_pipeline(once, pipeline, PassContext())
    assert twice.to_text() == once.to_text()
