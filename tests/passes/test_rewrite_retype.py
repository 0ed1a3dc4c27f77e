"""The rewrite driver accepts a replacement of another type when the pattern asks (retype=True)
and re-infers the users downstream; types are compared as dims (dims_equal), not as text."""
from __future__ import annotations

import numpy as np
import pytest

from tensorsmith import codegen, ir
from tensorsmith.passes import apply_patterns, pattern

TEXT = """graph @main(%x: f32[8,6]) {
  param @w: f32[6,4]
  param @b: f32[4]
  %0: f32[8,4] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
  %1: f32[1,4] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 4)}
  %2: f32[8,4] = add(%0, %1)
  %6: f32[8,4] = composite(%2) {name="jax.nn.relu"} {
    ^jax.nn.relu(%3: f32[8,4]):
      %4: f32[] = constant() {dtype="f32", value=0.0}
      %5: f32[8,4] = max(%3, %4)
      return %5
  }
  %7: f32[32] = reshape(%6) {shape=(32,)}
  %8: f32[32] = exp(%7)
  return %8
}
"""
R = np.random.default_rng(0)
PARAMS = {"w": R.standard_normal((6, 4)).astype(np.float32),
          "b": R.standard_normal(4).astype(np.float32)}
KEEP = np.array([0, 2, 3])


@pattern("narrow", ops=("dot_general", "broadcast_in_dim"))
def narrow(rw, node):
    """Drop unit 1 of @w / @b: the node's output loses a column."""
    src = node.inputs[-1]
    if src.name not in ("w", "b"):
        return None
    small = rw.add_param(rw.param_array(src)[..., KEEP], f"{src.name}.narrow")
    if node.op == "dot_general":
        return rw.replace(node, rw.op("dot_general", node.inputs[0], small,
                                      contracting_dims=((1,), (0,))), retype=True)
    return rw.replace(node, rw.op("broadcast_in_dim", small, broadcast_dimensions=(1,),
                                  shape=(1, len(KEEP))), retype=True)


def test_a_retyped_replacement_is_followed_downstream():
    g = ir.parse(TEXT, PARAMS)
    out = apply_patterns(g, [narrow])
    ir.verify(out)
    text = out.to_text()
    assert "%2: f32[8,3] = add(" in text, text
    assert "^jax.nn.relu(%3: f32[8,3]):" in text and "%5: f32[8,3] = max(%3, %4)" in text, text
    assert "%7: f32[24] = reshape(%6) {shape=(24,)}" in text and "%8: f32[24] = exp(%7)" in text, text
    assert "return %8" in text
    x = R.standard_normal((8, 6)).astype(np.float32)
    want = np.exp(np.maximum(x @ PARAMS["w"][:, KEEP] + PARAMS["b"][KEEP], 0).reshape(-1))
    np.testing.assert_allclose(codegen.executor(out)(x)[0], want, rtol=1e-5)
    assert g.to_text() == ir.parse(TEXT, PARAMS).to_text()  # the input graph is unchanged


def test_without_retype_a_type_change_is_refused():
    @pattern("narrow-no-retype", ops="dot_general")
    def bad(rw, node):
        small = rw.add_param(rw.param_array(node.inputs[1])[:, :3], "w.narrow")
        return rw.replace(node, rw.op("dot_general", node.inputs[0], small,
                                      contracting_dims=((1,), (0,))))

    with pytest.raises(ValueError, match=r"pattern 'narrow-no-retype' replaced %0: f32\[8,4\] with "
                       r"%\d+: f32\[8,3\] \(pass retype=True"):
        apply_patterns(ir.parse(TEXT, PARAMS), [bad])


def test_a_retype_that_downstream_cannot_follow_names_the_node():
    @pattern("narrow-dot-only", ops="dot_general")
    def dot_only(rw, node):  # leaves @b at 4 wide: the add cannot follow
        small = rw.add_param(rw.param_array(node.inputs[1])[:, KEEP], "w.narrow")
        return rw.replace(node, rw.op("dot_general", node.inputs[0], small,
                                      contracting_dims=((1,), (0,))), retype=True)

    with pytest.raises(ir.InferenceError, match=r"node %2 = add\(\.\.\.\): cannot follow input %\d+ "
                       r"changed from f32\[8,4\] to f32\[8,3\]: .* \(%1 still has 4 in dim 1 \(from dim 0 of @b\) "):
        apply_patterns(ir.parse(TEXT, PARAMS), [dot_only])


def test_equal_dims_written_differently_are_the_same_type():
    src = """graph @g(%x: f32[2*N]) {
  %0: f32[2*N] = exp(%x)
  %1: f32[2*N] = neg(%0)
  return %1
}
"""

    @pattern("exp-as-written-otherwise", ops="exp")
    def respell(rw, node):
        if node.inputs[0].name != "x":
            return None
        # A value typed f32[N*2]: the same dim, spelled the other way round.
        v = rw.op("reshape", node.inputs[0], shape=("N*2",))
        return rw.replace(node, rw.op("exp", v))

    out = apply_patterns(ir.parse(src), [respell])
    ir.verify(out)
    assert [n.op for n in out.nodes] == ["reshape", "exp", "neg"]


def test_patterns_downstream_of_a_retype_see_the_new_types_in_the_same_sweep():
    seen = []

    @pattern("swap-add", ops="add")
    def swap_add(rw, node):  # a same-type replacement: the add must already be retyped
        seen.append(str(node.outputs[0].type))
        a, b = node.inputs
        return rw.replace(node, rw.op("add", b, a))

    out = apply_patterns(ir.parse(TEXT, PARAMS), [narrow, swap_add], max_sweeps=1)
    ir.verify(out)
    assert seen == ["f32[8,3]"]


def test_a_constant_fill_next_to_a_retyped_value_is_resized_by_the_sweep():
    src = """graph @main(%x: f32[8,6]) {
  param @w: f32[6,4]
  %0: f32[8,4] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
  %1: f32[1,4] = constant() {dtype="f32", value=0.5, shape=(1, 4)}
  %2: f32[8,4] = add(%0, %1)
  return %2
}
"""

    out = apply_patterns(ir.parse(src, {"w": PARAMS["w"]}), [narrow])
    ir.verify(out)
    assert '%1: f32[1,3] = constant() {dtype="f32", shape=(1, 3), value=0.5}' in out.to_text()
    x = R.standard_normal((8, 6)).astype(np.float32)
    np.testing.assert_allclose(codegen.executor(out)(x)[0], x @ PARAMS["w"][:, KEEP] + 0.5, rtol=1e-5)


def test_a_retype_inside_a_composite_body_changes_the_composite_and_its_users():
    fired = []

    @pattern("keep-three-columns", ops="max")
    def keep_three(rw, node):
        if fired:
            return None
        fired.append(node.name)
        m = rw.op("max", *node.inputs)
        return rw.replace(node, rw.op("slice", m, start=(0, 0), limit=(8, 3)), retype=True)

    out = apply_patterns(ir.parse(TEXT, PARAMS), [keep_three], regions=True)
    ir.verify(out)
    text = out.to_text()
    assert "%6: f32[8,3] = composite(%2)" in text and "%7: f32[24] = reshape(%6) {shape=(24,)}" in text, text
    x = R.standard_normal((8, 6)).astype(np.float32)
    want = np.exp(np.maximum(x @ PARAMS["w"] + PARAMS["b"], 0)[:, :3].reshape(-1))
    np.testing.assert_allclose(codegen.executor(out)(x)[0], want, rtol=1e-5)
