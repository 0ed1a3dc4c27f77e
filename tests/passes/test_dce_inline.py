"""dce and inline: golden IR text, remarks and numerics."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import assert_same_numerics, ir, remarks, run  # noqa: E402

W = np.arange(4, dtype=np.float32) - 1.5

DEAD = """
    graph @main(%x: f32[4]) {
      param @used: f32[4]
      param @in_body: f32[4]
      param @unused: f32[4]
      %0: f32[4] = mul(%x, @used)
      %1: f32[4] = exp(%0)
      %2: f32[4] = add(%1, %x)
      %5: f32[4] = composite(%0) {name="scale"} {
        ^scale(%3: f32[4]):
          %4: f32[4] = mul(%3, @in_body)
          return %4
      }
      return %5
    }
    """


def test_dce_drops_dead_nodes_and_unread_params_but_keeps_params_read_by_bodies():
    before, out, ctx = run(DEAD, "dce", params={"used": W, "in_body": W + 1, "unused": W + 2})
    assert out.to_text() == ir("""
        graph @main(%x: f32[4]) {
          param @used: f32[4]  # 4 elems, 16 B, 0.0% zero
          param @in_body: f32[4]  # 4 elems, 16 B, 0.0% zero
          %0: f32[4] = mul(%x, @used)
          %5: f32[4] = composite(%0) {name="scale"} {
            ^scale(%3: f32[4]):
              %4: f32[4] = mul(%3, @in_body)
              return %4
          }
          return %5
        }
        """)
    assert remarks(ctx) == ["[dce] applied: removed 2 dead nodes and 1 unused params"]
    assert_same_numerics(before, out)


def test_dce_on_a_clean_graph_changes_nothing_and_says_nothing():
    _, once, _ = run(DEAD, "dce", params={"used": W, "in_body": W + 1, "unused": W + 2})
    from tensorsmith.passes import PassContext, run_pipeline
    ctx = PassContext()
    twice, _ = run_pipeline(once, "dce", ctx)
    assert twice.to_text() == once.to_text() and ctx.remarks == []


COMPOSITES = """
    graph @main(%x: f32[4]) {
      param @w: f32[4]
      %3: f32[4] = composite(%x) {name="jax.nn.relu"} {
        ^jax.nn.relu(%0: f32[4]):
          %1: f32[] = constant() {dtype="f32", value=0.0}
          %2: f32[4] = max(%0, %1)
          return %2
      }
      %6: f32[4] = composite(%3) {name="scale"} {
        ^scale(%4: f32[4]):
          %5: f32[4] = mul(%4, @w)
          return %5
      }
      return %6
    }
    """


def test_inline_replaces_every_composite_by_its_body():
    before, out, ctx = run(COMPOSITES, "inline", params={"w": W})
    assert out.to_text() == ir("""
        graph @main(%x: f32[4]) {
          param @w: f32[4]  # 4 elems, 16 B, 0.0% zero
          %7: f32[] = constant() {dtype="f32", value=0.0}
          %8: f32[4] = max(%x, %7)
          %9: f32[4] = mul(%8, @w)
          return %9
        }
        """)
    assert remarks(ctx) == ["[inline] applied: %3: inlined composite 'jax.nn.relu'",
                            "[inline] applied: %6: inlined composite 'scale'"]
    assert_same_numerics(before, out)


@pytest.mark.parametrize("names, kept", [("jax.nn.*", ["scale"]), ("scale", ["jax.nn.relu"]),
                                         ("nothing", ["jax.nn.relu", "scale"])])
def test_inline_names_selects_composites_by_glob(names, kept):
    before, out, _ = run(COMPOSITES, f"inline{{names={names}}}", params={"w": W})
    assert [n.attrs["name"] for n in out.nodes if n.op == "composite"] == kept
    assert_same_numerics(before, out)


def test_inlined_bodies_are_then_canonicalized():
    before, out, _ = run(COMPOSITES, "inline,canonicalize,dce", params={"w": W})
    assert out.to_text() == ir("""
        graph @main(%x: f32[4]) {
          param @w: f32[4]  # 4 elems, 16 B, 0.0% zero
          %10: f32[4] = relu(%x)
          %9: f32[4] = mul(%10, @w)
          return %9
        }
        """)
    assert_same_numerics(before, out)
