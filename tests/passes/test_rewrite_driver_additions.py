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


def test_use_counts_stay_exact_within_a_sweep():
    # %1 = mul(%x, 1) is replaced by %x early in the sweep: by the time the sweep reaches
    # exp, %x has lost the dead mul as a reader and gained the add that read %1.
    g = parse("""graph @main(%x: f32[4]) {
  %0: f32[] = constant() {dtype="f32", value=1.0}
  %1: f32[4] = mul(%x, %0)
  %2: f32[4] = exp(%x)
  %3: f32[4] = add(%1, %2)
  %4: f32[4] = neg(%3)
  return %4, %3
}
""")
    seen = {}

    @pattern("mul-one", ops="mul")
    def mul_one(rw, node):
        return rw.replace(node, node.inputs[0])

    @pattern("count", ops=("exp", "add", "neg"))
    def count(rw, node):
        seen.setdefault(node.op, (rw.num_uses(node.inputs[0]),
                                  sorted(u.op for u in rw.users[rw.resolve(node.inputs[0]).name])))

    @pattern("neg-to-tanh", ops="neg")
    def neg_to_tanh(rw, node):  # a replacement by a new node: the new node reads %3
        return rw.replace(node, rw.op("tanh", node.inputs[0]))

    apply_patterns(g, [mul_one, count, neg_to_tanh], max_sweeps=1)
    assert seen["exp"] == (2, ["add", "exp"])    # not 3 (mul is gone), not 1 (add moved over)
    assert seen["add"] == (2, ["add", "exp"])    # %x read twice by add and exp
    assert seen["neg"] == (2, ["neg"])           # %3: neg, plus being a graph output


def test_a_value_replaced_twice_moves_its_users_and_output_role():
    g = parse("""graph @main(%x: f32[4]) {
  %0: f32[4] = exp(%x)
  %1: f32[4] = neg(%0)
  return %1
}
""")
    seen = []

    @pattern("drop-exp", ops="exp")
    def drop_exp(rw, node):
        return rw.replace(node, rw.op("tanh", node.inputs[0]))

    @pattern("drop-neg", ops="neg")
    def drop_neg(rw, node):
        seen.append(rw.num_uses(node.inputs[0]))
        new = rw.op("relu", node.inputs[0])
        rw.replace(node, new)
        seen.append(rw.num_uses(new))  # the output role moved to the replacement
        return True

    out = apply_patterns(g, [drop_exp, drop_neg], max_sweeps=1)
    assert seen == [1, 1]
    assert [n.op for n in out.nodes] == ["tanh", "relu"]


def test_reads_inside_composite_bodies_count_and_follow_rewrites():
    g = parse("""graph @main(%x: f32[4]) {
  param @w: f32[4]
  param @v: f32[4]
  %2: f32[4] = composite(%x) {name="scale"} {
    ^scale(%0: f32[4]):
      %1: f32[4] = mul(%0, @w)
      return %1
  }
  %3: f32[4] = exp(%2)
  %4: f32[4] = add(%3, @v)
  return %4
}
""", params={"w": np.ones(4, np.float32), "v": np.ones(4, np.float32)})
    seen = []

    @pattern("w-to-v", ops="mul")  # inside the body: read @v instead of @w
    def w_to_v(rw, node):
        if node.inputs[1].name == "w":
            return rw.replace(node, rw.op("mul", node.inputs[0], _param(rw, "v")))

    def _param(rw, name):
        from tensorsmith.ir import TensorType, Value
        return Value(name, TensorType.of(rw.params[name]))

    @pattern("count", ops="exp")
    def count(rw, node):
        seen.append({p: rw.num_uses(_param(rw, p)) for p in ("w", "v")})

    out = apply_patterns(g, [w_to_v, count], regions=True, max_sweeps=1)
    assert seen == [{"w": 0, "v": 2}]  # the rewritten composite reads @v now, and add does
    assert list(out.params) == ["v"]
