"""ir.infer_types: re-inference after a shape change (pruned params, a new input shape).

Shrunk models are checked against an independent oracle: the original JAX function with
the removed units' weights zeroed (pruned = masked), or the JAX function at the new shape.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorsmith
from tensorsmith import codegen, ir
from tensorsmith.errors import VerifyError
from tensorsmith.ir import InferenceError, Value, infer_types

sys.path.insert(0, str(Path(__file__).parent))
import zoo  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5


def _run(g, *args):
    """Compile ``g`` and call it (numpy arrays out)."""
    return [np.asarray(o) for o in tensorsmith.compile(g)(*args)]


def _shrunk(g, updates):
    """``g`` with some params replaced, re-inferred and verified; ``g`` itself is unchanged."""
    before = g.to_text()
    out = infer_types(g.with_params(updates))
    ir.verify(out)
    assert g.to_text() == before
    return out


# --------------------------------------------------------------------------- (a) MLP
def test_mlp_hidden_layer_shrinks_and_matches_the_masked_model():
    fn, params, (x,) = zoo.ZOO["mlp"]()
    g = zoo.traced("mlp", batch_dim=True)
    drop = np.array([1, 4, 5, 17, 30])
    keep = np.setdiff1d(np.arange(32), drop)
    p = dict(g.params)
    pruned = _shrunk(g, {"layer0/w": p["layer0/w"][:, keep], "layer0/b": p["layer0/b"][keep],
                         "layer1/w": p["layer1/w"][keep]})
    text = pruned.to_text()
    assert "dot_general(%x, @layer0/w)" in text and "f32[N,27] = dot_general(%x" in text, text
    assert "broadcast_dimensions=(1,), shape=(1, 27)" in text, text
    assert "^jax.nn.relu(%" in text and "f32[N,27]):" in text, text  # the composite's region

    masked = {k: dict(v) for k, v in params.items()}
    masked["layer0"]["w"] = masked["layer0"]["w"].copy()
    masked["layer0"]["w"][:, drop] = 0
    masked["layer0"]["b"] = masked["layer0"]["b"].copy()
    masked["layer0"]["b"][drop] = 0
    for batch in (4, 7):
        xb = zoo.fresh_inputs((np.zeros((batch, 16), np.float32),), seed=batch)[0]
        want = np.asarray(fn(masked, xb))
        np.testing.assert_allclose(_run(pruned, xb)[0], want, rtol=RTOL, atol=ATOL)
        # The oracle is sensitive: the unmasked model differs.
        assert not np.allclose(np.asarray(fn(params, xb)), want, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- (b) digits CNN
def _digits_rows(keep, order):
    """Rows of the first dense kernel that read the kept channels of the (4,4,32) map."""
    if order == "NHWC":  # flatten index (h*4 + w)*32 + c
        return (np.arange(16)[:, None] * 32 + keep[None, :]).reshape(-1)
    return (keep[:, None] * 16 + np.arange(16)[None, :]).reshape(-1)  # c*16 + h*4 + w


def _digits_prune(g, keep, order="NHWC"):
    p = dict(g.params)
    upd = {"params/Conv_1/kernel": p["params/Conv_1/kernel"][..., keep],
           "params/Dense_0/kernel": p["params/Dense_0/kernel"][_digits_rows(keep, order)]}
    for k in ["params/Conv_1/bias"] + [f"params/BatchNorm_1/{s}" for s in ("bias", "mean", "scale", "var")]:
        upd[k] = p[k][keep]
    return upd


def test_digits_cnn_last_conv_loses_channels_and_matches_the_masked_model():
    ex = tensorsmith.examples.load("digits-cnn")
    x = np.asarray(ex.eval_data[0][:32], np.float32)
    g = tensorsmith.trace(ex.fn, x, params=ex.params, batch_dim=True)
    drop = np.array([0, 3, 8, 9, 21, 31])
    keep = np.setdiff1d(np.arange(32), drop)
    pruned = _shrunk(g, _digits_prune(g, keep))
    text = pruned.to_text()
    assert "f32[N,4,4,26] = conv(" in text, text
    assert [ln.split("#")[0].split("= ")[0].strip() for ln in text.splitlines() if "reshape(" in ln] \
        == ["%34: f32[N,416]"], text

    masked = jax.tree_util.tree_map(np.array, ex.params)
    p = masked["params"]
    p["Conv_1"]["kernel"][..., drop] = 0
    p["Conv_1"]["bias"][drop] = 0
    p["BatchNorm_1"]["scale"][drop] = 0  # BN of a zero channel: (0 - mean) * 0 + 0 = 0
    p["BatchNorm_1"]["bias"][drop] = 0
    want = np.asarray(ex.fn(masked, x))
    got = _run(pruned, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.asarray(ex.fn(ex.params, x)), want, rtol=1e-4, atol=1e-4)
    # The flatten is NHWC: rows picked in NCHW order give a graph that verifies but is wrong.
    wrong = _shrunk(g, _digits_prune(g, keep, order="NCHW"))
    assert not np.allclose(_run(wrong, x)[0], want, rtol=1e-4, atol=1e-4)


def test_digits_cnn_dense_not_shrunk_names_the_dot_and_the_param():
    ex = tensorsmith.examples.load("digits-cnn")
    g = zoo.traced("digits")
    keep = np.arange(24)
    upd = _digits_prune(g, keep)
    del upd["params/Dense_0/kernel"]
    with pytest.raises(InferenceError) as e:
        infer_types(g.with_params(upd))
    msg = str(e.value)
    assert msg.startswith("node %35 = dot_general(...) [digits_cnn.py:34 (head)]: cannot follow "
                          "input %34 changed from f32[8,512] to f32[8,384]: "), msg
    assert "@params/Dense_0/kernel still has 512 in dim 0" in msg, msg
    assert isinstance(e.value, VerifyError) and e.value.node.op == "dot_general"
    del ex


# --------------------------------------------------------------------------- (c) cannot follow
def test_a_reshape_that_splits_a_changed_dim_is_an_error_naming_the_node():
    r = np.random.default_rng(1)
    w = r.standard_normal((16, 32)).astype(np.float32)

    def heads(p, x):
        h = x @ p["w"]
        return h.reshape(x.shape[0], 4, 8).sum(-1)

    g = tensorsmith.trace(heads, np.ones((2, 16), np.float32), params={"w": w})
    with pytest.raises(InferenceError) as e:
        infer_types(g.with_params({"w": w[:, :24]}))
    msg = str(e.value)
    assert msg.startswith("node %1 = reshape(...) [test_infer.py:"), msg
    assert ("cannot follow input %0 changed from f32[2,32] to f32[2,24]: the reshape to [2,4,8] "
            "splits dim(s) [32] into [4,8]") in msg, msg
    # A pass that sets the split for the new input (3 heads of 8) is followed as given.
    n = g.nodes[1]
    edited = g.replace(nodes=(g.nodes[0], n.replace(attrs=n.attrs.set(shape=(2, 3, 8))), *g.nodes[2:]))
    out = infer_types(edited.with_params({"w": w[:, :24]}))
    ir.verify(out)
    x = r.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x)[0], (x @ w[:, :24]).reshape(2, 3, 8).sum(-1),
                               rtol=RTOL, atol=ATOL)


def test_a_partial_slice_of_a_changed_dim_is_an_error():
    g = ir.parse("""graph @g(%x: f32[4,32]) {
  %0: f32[4,16] = slice(%x) {limit=(4, 16), start=(0, 0)}
  return %0
}
""")
    with pytest.raises(InferenceError, match=r"node %0 = slice\(\.\.\.\): cannot follow input %x "
                       r"changed from f32\[4,32\] to f32\[4,24\]: slice \[0:16:1\] takes part of "
                       r"dim 1, which changed from 32 to 24"):
        infer_types(g.replace(inputs=(Value("x", ir.TensorType((4, 24), "f32")),)))


# --------------------------------------------------------------------------- (d) regions
def test_constant_fills_and_iota_follow_a_new_input_length():
    def fn(x):
        h = x * jnp.arange(8, dtype=jnp.float32) + jnp.ones((8,), jnp.float32)
        return jax.nn.relu(h).reshape(x.shape[0], 2, 4).sum(-1)

    g = tensorsmith.trace(fn, np.ones((3, 8), np.float32))
    new = g.replace(inputs=(Value("x", ir.TensorType((3, 6), "f32")),))
    with pytest.raises(InferenceError, match=r"reshape.*splits dim\(s\) \[8\] into \[2,4\]"):
        infer_types(new)

    def fn2(x):  # the same without the split: everything follows the new length
        h = x * jnp.arange(8, dtype=jnp.float32) + jnp.ones((8,), jnp.float32)
        return jax.nn.relu(h).reshape(-1)

    g = tensorsmith.trace(fn2, np.ones((3, 8), np.float32))
    out = infer_types(g.replace(inputs=(Value("x", ir.TensorType((3, 6), "f32")),)))
    ir.verify(out)
    text = out.to_text()
    assert "iota() {axis=0, dtype=\"f32\", shape=(6,)}" in text, text
    assert "f32[18] = reshape(" in text, text
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    oracle = jax.jit(lambda x: jax.nn.relu(x * jnp.arange(6, dtype=jnp.float32) + 1.0).reshape(-1))
    np.testing.assert_allclose(_run(out, x)[0], np.asarray(oracle(x)), rtol=RTOL, atol=ATOL)


COND = """graph @g(%p: bool[], %x: f32[N,6]) {
  param @w: f32[6,8]
  param @v: f32[8,3]
  %0: f32[N,8] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
  %7: f32[N,8] = cond(%p, %0) {
    ^then(%1: f32[N,8]):
      %2: f32[] = constant() {dtype="f32", value=2.0}
      %3: f32[N,8] = mul(%1, %2)
      return %3
    ^else(%4: f32[N,8]):
      %5: f32[N,8] = tanh(%4)
      %6: f32[1,8] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 8)}
      %8: f32[N,8] = add(%5, %6)
      return %8
  }
  %9: f32[N,3] = dot_general(%7, @v) {contracting_dims=((1,), (0,))}
  return %9
}
"""


def test_cond_branches_follow_the_shape_change():
    r = np.random.default_rng(3)
    params = {"w": r.standard_normal((6, 8)).astype(np.float32),
              "v": r.standard_normal((8, 3)).astype(np.float32),
              "b": r.standard_normal(8).astype(np.float32)}
    text = COND.replace("  param @v", "  param @b: f32[8]\n  param @v")
    g = ir.parse(text, params)
    ir.verify(g)
    keep = np.array([0, 2, 3, 6, 7])
    out = _shrunk(g, {"w": params["w"][:, keep], "v": params["v"][keep], "b": params["b"][keep]})
    txt = out.to_text()
    assert "^then(%1: f32[N,5]):" in txt and "^else(%4: f32[N,5]):" in txt, txt
    assert "%6: f32[1,5] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 5)}" in txt, txt
    run = codegen.executor(out)
    x = r.standard_normal((4, 6)).astype(np.float32)
    h = x @ params["w"][:, keep]
    for pred, want in ((True, (h * 2) @ params["v"][keep]),
                       (False, (np.tanh(h) + params["b"][keep]) @ params["v"][keep])):
        np.testing.assert_allclose(run(np.bool_(pred), x)[0], want, rtol=1e-4, atol=1e-4)


def test_cond_branches_that_stop_agreeing_are_an_error():
    r = np.random.default_rng(3)
    params = {"w": r.standard_normal((6, 8)).astype(np.float32),
              "v": r.standard_normal((8, 3)).astype(np.float32),
              "b": r.standard_normal(8).astype(np.float32)}
    g = ir.parse(COND.replace("  param @v", "  param @b: f32[8]\n  param @v"), params)
    # Only the else-branch's bias shrinks: the branch cannot add it to the unchanged width.
    with pytest.raises(InferenceError, match=r"in region \^else: node %8 = add\(\.\.\.\): cannot "
                       r"follow input %6 changed from f32\[1,8\] to f32\[1,5\]"):
        infer_types(g.with_params({"b": params["b"][:5]}))


# --------------------------------------------------------------------------- (e) unchanged
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_unchanged_zoo_graphs_come_back_identical(name):
    for batch_dim in (None, True):
        g = zoo.traced(name, batch_dim=batch_dim)
        out = infer_types(g)
        assert out.to_text() == g.to_text()


def test_unchanged_onnx_models_come_back_identical():
    sys.path.insert(0, str(Path(__file__).parent / "onnx"))
    import models
    from tensorsmith.frontends.onnx import import_onnx

    for name, (build, _) in models.MODELS.items():
        g = import_onnx(build())
        assert infer_types(g).to_text() == g.to_text(), name


def test_infer_types_recomputes_stale_declared_types():
    g = ir.parse("""graph @g(%x: f32[4,8]) {
  %0: f32[4,8] = exp(%x)
  %1: f32[32] = reshape(%0) {shape=(32,)}
  return %1
}
""")
    new = g.replace(inputs=(Value("x", ir.TensorType((2, 8), "f32")),))
    with pytest.raises(ir.VerificationError):
        ir.verify(new)
    assert infer_types(new).to_text() == """graph @g(%x: f32[2,8]) {
  %0: f32[2,8] = exp(%x)
  %1: f32[16] = reshape(%0) {shape=(16,)}
  return %1
}
"""


def test_reshape_groups():
    from tensorsmith.ir.infer import reshape_groups
    assert reshape_groups((8, 4, 4, 32), (8, 512)) == [([0], [0]), ([1, 2, 3], [1])]
    assert reshape_groups(("N", 512), ("N", 4, 128)) == [([0], [0]), ([1], [1, 2])]
    assert reshape_groups((2, 1, 6), (12, 1)) == [([0, 1, 2], [0]), ([], [1])]
    assert reshape_groups((6, 4), (4, 6)) == [([0, 1], [0, 1])]


WHILE = """graph @g(%x: f32[N,8], %n: i32[]) {
  param @b: f32[8]
  %0: i32[] = constant() {dtype="i32", value=0}
  %11: i32[], %12: f32[N,8] = while_loop(%0, %x, %n) {num_carry=2} {
    ^cond(%1: i32[], %2: f32[N,8], %3: i32[]):
      %4: bool[] = lt(%1, %3)
      return %4
    ^body(%5: i32[], %6: f32[N,8], %7: i32[]):
      %8: i32[] = constant() {dtype="i32", value=1}
      %9: i32[] = add(%5, %8)
      %13: f32[1,8] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 8)}
      %14: f32[N,8] = add(%6, %13)
      %10: f32[N,8] = tanh(%14)
      return %9, %10
  }
  return %12
}
"""


def test_while_loop_carry_follows_the_shape_change():
    r = np.random.default_rng(4)
    b = r.standard_normal(8).astype(np.float32)
    g = ir.parse(WHILE, {"b": b})
    ir.verify(g)
    keep = np.array([1, 2, 4, 7])
    new = g.replace(inputs=(Value("x", ir.TensorType(("N", 4), "f32")), g.inputs[1]))
    out = _shrunk(new, {"b": b[keep]})
    text = out.to_text()
    assert "%11: i32[], %12: f32[N,4] = while_loop(%0, %x, %n)" in text, text
    assert "^cond(%1: i32[], %2: f32[N,4], %3: i32[]):" in text, text
    assert "^body(%5: i32[], %6: f32[N,4], %7: i32[]):" in text, text
    x = r.standard_normal((3, 4)).astype(np.float32)
    want = x
    for _ in range(3):
        want = np.tanh(want + b[keep])
    np.testing.assert_allclose(codegen.executor(out)(x, np.int32(3))[0], want, rtol=1e-5, atol=1e-6)
    # Without the smaller bias the body cannot keep the carry's new type.
    with pytest.raises(InferenceError, match=r"in region \^body: node %14 = add\(\.\.\.\): cannot "
                       r"follow input %6 changed from f32\[N,8\] to f32\[N,4\]: .*\(%13 still has 8 in dim 1 \(from dim 0 of @b\) "):
        infer_types(new)


SCAN = """graph @g(%x: f32[N,8], %xs: f32[5,8]) {
  %18: f32[N,8], %19: f32[5,N,8] = scan(%x, %xs) {length=5, num_carry=1, num_xs=1} {
    ^body(%13: f32[N,8], %14: f32[8]):
      %15: f32[N,8] = add(%13, %14)
      %16: f32[N,8] = exp(%15)
      return %15, %16
  }
  return %18, %19
}
"""


def test_scan_length_and_body_follow_new_inputs():
    g = ir.parse(SCAN)
    out = infer_types(g.replace(inputs=(Value("x", ir.TensorType(("N", 6), "f32")),
                                        Value("xs", ir.TensorType((7, 6), "f32")))))
    ir.verify(out)
    text = out.to_text()
    assert "%18: f32[N,6], %19: f32[7,N,6] = scan(%x, %xs) {length=7, num_carry=1, num_xs=1}" in text, text
    assert "^body(%13: f32[N,6], %14: f32[6]):" in text, text
    r = np.random.default_rng(5)
    x, xs = r.standard_normal((2, 6)).astype(np.float32), r.standard_normal((7, 6)).astype(np.float32) * 0.1
    carry, ys = x, []
    for t in range(7):
        carry = carry + xs[t]
        ys.append(np.exp(carry))
    got = codegen.executor(out)(x, xs)
    np.testing.assert_allclose(got[0], carry, rtol=1e-5)
    np.testing.assert_allclose(got[1], np.stack(ys), rtol=1e-5)


def test_onnx_resnet_residual_channels_shrink_and_match_onnxruntime_on_the_masked_model():
    """Drop stem channels: the residual add couples them to layer1.1; every reader shrinks too."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    sys.path.insert(0, str(Path(__file__).parent / "onnx"))
    import models
    from tensorsmith.frontends.onnx import import_onnx

    model = models.resnet_cnn()
    g = import_onnx(model)
    drop = np.array([2, 5, 11, 12])
    keep = np.setdiff1d(np.arange(16), drop)
    produce = ["stem.conv.weight", "layer1.1.conv.weight"] + [
        f"{b}.bn.{s}" for b in ("stem", "layer1.1") for s in ("weight", "bias", "running_mean", "running_var")]
    read = ["layer1.0.conv.weight", "layer2.0.conv.weight", "layer2.downsample.conv.weight"]
    p = dict(g.params)
    upd = {k: p[k][keep] for k in produce} | {k: p[k][:, keep] for k in read}
    pruned = _shrunk(g, upd)
    assert "%layer1.add: f32[N,12,32,32] = add(" in pruned.to_text()

    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    zero = {"stem.conv.weight", "layer1.1.conv.weight", "stem.bn.weight", "stem.bn.bias",
            "layer1.1.bn.weight", "layer1.1.bn.bias"}
    for init in masked.graph.initializer:
        if init.name in zero:
            arr = numpy_helper.to_array(init).copy()
            arr[drop] = 0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    sess = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(pruned)
    for batch in (2, 3):
        x = models.resnet_inputs(batch, seed=batch)["image"]
        want = sess.run(None, {"image": x})[0]
        np.testing.assert_allclose(np.asarray(cm(x)[0]), want, rtol=1e-4, atol=1e-4)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert not np.allclose(dense.run(None, {"image": x})[0], want, rtol=1e-4, atol=1e-4)


FOLLOWERS = """graph @g(%x: f32[2,5,5,8], %y: f32[4,8]) {
  param @k: f32[3,3,1,8]
  %0: f32[2,5,5,8] = conv(%x, @k) {dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=8, padding=((1, 1), (1, 1))}
  %1: f32[2,1,1,8] = reduce_window(%0) {kind="max", window_dimensions=(1, 5, 5, 1), window_strides=(1, 5, 5, 1)}
  %2: f32[4,8], %3: i32[4,8] = top_k(%y) {k=8}
  %4: f32[] = constant() {dtype="f32", value=1.5}
  %5: f32[8,4] = broadcast_in_dim(%4) {broadcast_dimensions=(), shape=(8, 4)}
  %6: f32[4,8] = transpose(%5) {permutation=(1, 0)}
  %7: f32[4,8] = add(%2, %6)
  return %1, %7
}
"""


def test_depthwise_conv_global_pool_full_top_k_and_a_transposed_fill_follow():
    r = np.random.default_rng(6)
    k = r.standard_normal((3, 3, 1, 8)).astype(np.float32)
    g = ir.parse(FOLLOWERS, {"k": k})
    ir.verify(g)
    keep = np.array([0, 1, 3, 4, 6, 7])
    new = g.replace(inputs=(Value("x", ir.TensorType((2, 7, 7, 6), "f32")),
                            Value("y", ir.TensorType((4, 5), "f32"))))
    out = _shrunk(new, {"k": k[..., keep]})
    text = out.to_text()
    assert "feature_group_count=6" in text, text
    assert "window_dimensions=(1, 7, 7, 1), window_strides=(1, 7, 7, 1)" in text, text
    assert "top_k(%y) {k=5}" in text, text
    assert "%5: f32[5,4] = broadcast_in_dim(%4) {broadcast_dimensions=(), shape=(5, 4)}" in text, text
    x = r.standard_normal((2, 7, 7, 6)).astype(np.float32)
    y = r.standard_normal((4, 5)).astype(np.float32)
    pooled, added = codegen.executor(out)(x, y)
    conv = jax.lax.conv_general_dilated(x, k[..., keep], (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=6)
    np.testing.assert_allclose(pooled, np.asarray(conv).max(axis=(1, 2), keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(added, -np.sort(-y, axis=-1) + 1.5, rtol=1e-6)


@pytest.mark.parametrize("name,dims,shape", [("digits", ("B", 8, 8, 1), (3, 8, 8, 1)),
                                             ("transformer_block", ("B", "S", 16), (3, 5, 16))])
def test_a_static_trace_made_symbolic_runs_at_new_shapes(name, dims, shape):
    fn, params, _ = zoo.ZOO[name]()
    g = zoo.traced(name)
    x = g.inputs[0]
    out = infer_types(g.replace(inputs=(Value(x.name, ir.TensorType(dims, x.dtype)),)))
    ir.verify(out)
    xb = np.random.default_rng(7).random(shape).astype(np.float32)
    np.testing.assert_allclose(_run(out, xb)[0], np.asarray(zoo.call(fn, params, xb)),
                               rtol=1e-5, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3), min_size=1, max_size=4),
       st.data())
def test_reshape_groups_pair_runs_of_equal_size(runs, data):
    """Build src/dst from runs of dims with equal products; groups cover both, in order."""
    src, dst = [], []
    for run in runs:
        src.extend(run)
        size = int(np.prod(run))
        dst.extend(data.draw(st.sampled_from(sorted(_factorizations(size))), label="factors"))
    from tensorsmith.ir.infer import reshape_groups
    groups = reshape_groups(tuple(src), tuple(dst))
    assert [i for gi, _ in groups for i in gi] == list(range(len(src)))
    assert [j for _, gj in groups for j in gj] == list(range(len(dst)))
    for gi, gj in groups:
        assert np.prod([src[i] for i in gi]) == np.prod([dst[j] for j in gj])
        assert (gi and gj) or all(src[i] == 1 for i in gi) and all(dst[j] == 1 for j in gj)
        for p in range(1, len(gi)):  # minimal: no shorter runs already hold equal sizes
            for q in range(1, len(gj)):
                assert np.prod([src[i] for i in gi[:p]]) != np.prod([dst[j] for j in gj[:q]])


def _factorizations(n: int) -> set[tuple[int, ...]]:
    """Ordered factorizations of n into factors >= 2 (and (1,) for n == 1), up to 3 factors."""
    if n == 1:
        return {(1,)}
    out = {(n,)}
    for a in range(2, n):
        if n % a == 0:
            out |= {(a,) + rest for rest in _factorizations(n // a) if rest != (1,) and len(rest) < 3}
    return out


def test_head_pruning_with_the_split_reshapes_set_by_the_pass():
    """Drop head 1 of 2: the pass sets the head-split reshapes; the merge back follows."""
    fn, params, _ = zoo.ZOO["transformer_block"]()
    g = zoo.traced("transformer_block", batch_dim=True)
    p = dict(g.params)
    upd = {f"attn/{w}": p[f"attn/{w}"][:, :8] for w in ("wq", "wk", "wv")}
    upd["attn/wo"] = p["attn/wo"][:8]
    with pytest.raises(InferenceError, match=r"node %20 = reshape\(\.\.\.\) \[zoo.py:110 \(heads\)\]"):
        infer_types(g.with_params(upd))

    def one_head(n):
        if n.op == "reshape" and n.outputs[0].type.rank == 4:
            return n.replace(attrs=n.attrs.set(shape=n.attrs["shape"][:2] + (1, 8)))
        return n

    edited = g.replace(nodes=tuple(one_head(n) for n in g.nodes))
    out = _shrunk(edited, upd)
    text = out.to_text()
    assert text.count("f32[N,8,1,8] = reshape(") == 3 and "f32[N,8,8] = reshape(" in text, text
    masked = jax.tree_util.tree_map(np.array, params)
    masked["attn"]["wo"][8:] = 0
    x = np.random.default_rng(8).standard_normal((3, 8, 16)).astype(np.float32)
    want = np.asarray(fn(masked, x))
    np.testing.assert_allclose(_run(out, x)[0], want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(fn(params, x)), want, rtol=1e-5, atol=1e-5)


def test_a_dim_that_shrinks_to_one_does_not_start_broadcasting_silently():
    g = ir.parse("""graph @g(%x: f32[4,2], %y: f32[4,2]) {
  %0: f32[4,2] = add(%x, %y)
  %1: f32[] = constant() {dtype="f32", value=3.0}
  %2: f32[4,2] = broadcast_in_dim(%1) {broadcast_dimensions=(), shape=(4, 2)}
  %3: f32[4,2] = mul(%x, %2)
  return %0, %3
}
""")
    t = ir.TensorType((4, 1), "f32")
    with pytest.raises(InferenceError, match=r"node %0 = add\(\.\.\.\): cannot follow input %x "
                       r"changed from f32\[4,2\] to f32\[4,1\]: dim 1 of %x shrank from 2 to 1 and "
                       r"would now broadcast to 2"):
        infer_types(g.replace(inputs=(Value("x", t), g.inputs[1])))
    out = infer_types(g.replace(inputs=(Value("x", t), Value("y", t))))
    ir.verify(out)  # both operands shrank; the constant fill of %3 shrinks with %x
    assert "%2: f32[4,1] = broadcast_in_dim(%1) {broadcast_dimensions=(), shape=(4, 1)}" in out.to_text()


def test_a_mean_divisor_follows_the_count_of_reduced_elements():
    """Layer norm over a pruned hidden dim: jnp.mean's literal 1/16 count must follow."""
    r = np.random.default_rng(9)
    gamma = (1 + 0.1 * r.standard_normal(16)).astype(np.float32)

    def ln(p, x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * p["g"]

    g = tensorsmith.trace(ln, np.ones((3, 16), np.float32), params={"g": gamma})
    keep = np.arange(0, 16, 4)
    new = g.replace(inputs=(Value("x", ir.TensorType((3, 4), "f32")),)).with_params({"g": gamma[keep]})
    out = infer_types(new)
    ir.verify(out)
    assert "value=4.0" in out.to_text() and "value=16.0" not in out.to_text(), out.to_text()
    x = r.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x)[0], np.asarray(ln({"g": gamma[keep]}, x)), rtol=1e-5,
                               atol=1e-5)
    # To a symbolic count a literal cannot follow: the node is named, not left stale.
    with pytest.raises(InferenceError, match=r"divides a sum over 16 elements \(dims \(1,\)\) by "
                       r"the literal 16.0, and the count is now H"):
        infer_types(g.replace(inputs=(Value("x", ir.TensorType((3, "H"), "f32")),)).with_params(
            {"g": np.ones(1, np.float32)}))
