"""The pattern driver's additions used by the clean-up passes: remark dedupe, state, remove_param."""
from __future__ import annotations

import numpy as np

from tensorsmith.ir import parse
from tensorsmith.passes import PassContext, apply_patterns, pattern

TEXT = """graph @main(%x: f32[4]) {
  param @w: f32[4]
  %0: f32[4] = exp(%x)
  %1: f32[4] = neg(%0)
  %2: f32[4] = add(%1, @w)
  return %2
}
"""


def _graph():
    return parse(TEXT, params={"w": np.arange(4, dtype=np.float32)})


def test_a_near_miss_is_reported_once_across_sweeps():
    @pattern("exp-to-tanh", ops="exp")
    def exp_to_tanh(rw, node):  # fires once, so the driver sweeps a second time
        return rw.replace(node, rw.op("tanh", node.inputs[0]))

    @pattern("never", ops="add")
    def never(rw, node):
        rw.remark("missed", "add is not interesting", node)

    ctx = PassContext()
    apply_patterns(_graph(), [exp_to_tanh, never], ctx)
    assert [str(r) for r in ctx.remarks if r.kind == "missed"] == [
        "[] missed: %2: add is not interesting"]


def test_nodes_made_by_a_pattern_that_does_not_fire_are_dropped():
    @pattern("half-hearted", ops="neg")
    def half_hearted(rw, node):
        rw.op("abs", node.inputs[0])
        return None

    out = apply_patterns(_graph(), [half_hearted])
    assert out.to_text() == TEXT.replace("param @w: f32[4]", "param @w: f32[4]  # 4 elems, 16 B, 25.0% zero")


def test_state_lives_for_one_sweep_and_remove_param_frees_the_name():
    seen = []

    @pattern("fold-w", ops="add")
    def fold_w(rw, node):
        seen.append(dict(rw.state))
        rw.state["visits"] = rw.state.get("visits", 0) + 1
        tmp = rw.add_param(np.ones(4, np.float32), "w.tmp")
        rw.remove_param(tmp.name)
        new = rw.add_param(np.full(4, 2.0, np.float32), "w.tmp")  # the freed name is reused
        return rw.replace(node, rw.op("add", node.inputs[0], new)) if node.inputs[1].name == "w" else None

    out = apply_patterns(_graph(), [fold_w])
    assert seen == [{}, {}]  # two sweeps (the second finds nothing), each starting empty
    assert sorted(out.params) == ["w.tmp"]
    np.testing.assert_array_equal(out.params["w.tmp"], np.full(4, 2.0, np.float32))
