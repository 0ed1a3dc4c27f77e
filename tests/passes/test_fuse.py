"""fuse and the rewrite driver's outline/activation helpers: IR text, remarks, numerics."""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
import models  # noqa: E402
from cleanup_helpers import assert_same_numerics, ir, remarks  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.ir import verify  # noqa: E402
from tensorsmith.passes import apply_patterns, pattern  # noqa: E402


def _fused_names(graph) -> list[str]:
    return [n.attrs["name"] for n in graph.nodes if n.op == "composite"]


def _missed(compiled) -> list[str]:
    return [str(r) for rec in compiled.history for r in rec.remarks if r.kind == "missed"]


def _same(a, b, rtol=1e-5, atol=1e-5):
    a, b = list(a) if isinstance(a, (list, tuple)) else [a], list(b) if isinstance(b, (list, tuple)) else [b]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- outline on its own
OUTLINE_IN = """
    graph @main(%x: f32[2,3]) {
      param @w: f32[3,4]
      param @b: f32[4]
      %0: f32[2,4] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
      %1: f32[2,4] = add(%0, @b)
      %2: f32[2,4] = exp(%1)
      %3: f32[2,4] = neg(%2)
      return %3
    }
    """


def _outline_pattern(name="demo.dense_exp"):
    @pattern("outline-demo", ops="exp")
    def outline_demo(rw, node):
        add = rw.producer(node.inputs[0])
        dot = rw.producer(add.inputs[0])
        return rw.outline([node, dot, add], name, {"why": "test"}) is not None  # any order
    return outline_demo


def _params():
    r = np.random.default_rng(3)
    return {"w": r.standard_normal((3, 4)).astype(np.float32), "b": r.standard_normal(4).astype(np.float32)}


def test_outline_builds_a_typed_verified_composite_with_the_same_numerics():
    before = tensorsmith.ir.parse(ir(OUTLINE_IN), params=_params())
    after = apply_patterns(before, [_outline_pattern()])
    verify(after)
    assert after.to_text() == ir("""
        graph @main(%x: f32[2,3]) {
          param @w: f32[3,4]  # 12 elems, 48 B, 0.0% zero
          param @b: f32[4]  # 4 elems, 16 B, 0.0% zero
          %8: f32[2,4] = composite(%x) {name="demo.dense_exp", why="test"} {
            ^demo.dense_exp(%4: f32[2,3]):
              %5: f32[2,4] = dot_general(%4, @w) {contracting_dims=((1,), (0,))}
              %6: f32[2,4] = add(%5, @b)
              %7: f32[2,4] = exp(%6)
              return %7
          }
          %3: f32[2,4] = neg(%8)
          return %3
        }
        """)
    (comp,) = [n for n in after.nodes if n.op == "composite"]
    assert {v.name for v in comp.region_reads} == {"w", "b"}  # params read by name, not inputs
    assert comp.output.type == before.nodes[2].output.type
    assert_same_numerics(before, after)


def test_outline_refuses_when_an_intermediate_escapes():
    text = OUTLINE_IN.replace("return %3", "%4: f32[2,4] = mul(%3, %1)\n      return %4")
    from tensorsmith.passes import PassContext
    ctx = PassContext()
    before = tensorsmith.ir.parse(ir(text), params=_params())
    after = apply_patterns(before, [_outline_pattern()], ctx)
    assert after.to_text() == before.to_text()
    assert remarks(ctx, "missed") == [
        "[] missed: %2: did not form demo.dense_exp: %1 (add) has 1 user(s) outside the match"]


# --------------------------------------------------------------------------- activation helper
@pytest.mark.parametrize("act,fn", [
    ("relu", jax.nn.relu), ("gelu", jax.nn.gelu), ("silu", jax.nn.silu),
    ("sigmoid", jax.nn.sigmoid), ("tanh", jnp.tanh), ("clip", jax.nn.relu6)])
def test_jax_activations_fuse_through_their_composites(act, fn):
    r = np.random.default_rng(0)
    p = {"w": r.standard_normal((8, 16)).astype(np.float32), "b": r.standard_normal(16).astype(np.float32)}

    def f(p, x):
        return fn(x @ p["w"] + p["b"])

    x0 = np.zeros((4, 8), np.float32)
    unfused = tensorsmith.compile(f, x0, params=p, passes=[])
    for passes in ("fuse", "canonicalize,fuse"):
        fused = tensorsmith.compile(f, x0, params=p, passes=passes)
        assert _fused_names(fused.graph) == [f"fused.dense_bias_{act}"], (passes, fused.graph)
        (node,) = [n for n in fused.graph.nodes if n.op == "composite"]
        assert node.attrs["activation"] == act
        x = r.standard_normal((4, 8)).astype(np.float32) * 3
        _same(fused(x), unfused(x))


# --------------------------------------------------------------------------- JAX MLP
def _mlp(p, x):
    h1 = jax.nn.relu(x @ p["w1"] + p["b1"])
    h2 = jax.nn.gelu(h1 @ p["w2"] + p["b2"])
    return jnp.tanh(h2 @ p["w3"] + p["b3"])


def _mlp_params(seed=0):
    r = np.random.default_rng(seed)
    shapes = {"w1": (8, 16), "b1": (16,), "w2": (16, 16), "b2": (16,), "w3": (16, 4), "b3": (4,)}
    return {k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_jax_mlp_fused_equals_unfused():
    p, x0 = _mlp_params(), np.zeros((5, 8), np.float32)
    unfused = tensorsmith.compile(_mlp, x0, params=p, passes=[])
    fused = tensorsmith.compile(_mlp, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.dense_bias_relu", "fused.dense_bias_gelu",
                                         "fused.dense_bias_tanh"]
    text = fused.graph.to_text()
    assert 'composite(%x) {activation="relu", name="fused.dense_bias_relu"}' in text
    assert 'name="jax.nn.relu"' in text  # the JAX composite is kept inside the fused body
    verify(fused.graph)
    reparsed = tensorsmith.ir.parse(text, params=dict(fused.graph.params))
    assert reparsed.to_text() == text  # the fused composites round-trip through IR text
    for seed in range(3):
        x = np.random.default_rng(100 + seed).standard_normal((5, 8)).astype(np.float32)
        _same(fused(x), unfused(x))


def test_shared_intermediate_is_not_fused_and_says_why():
    def f(p, x):
        y = x @ p["w1"] + p["b1"]
        return jax.nn.relu(y) + y  # y has two users: relu and the residual add

    p, x0 = _mlp_params(), np.zeros((3, 8), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert "fused.dense_bias_relu" not in _fused_names(fused.graph)
    assert any("did not fuse dense+bias+relu" in m and "1 users besides the relu" in m
               for m in _missed(fused)), _missed(fused)
    # dense+bias alone still groups (its result is what escapes), and numerics hold.
    assert _fused_names(fused.graph).count("fused.dense_bias") == 1
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x))


def test_shared_linear_output_is_not_fused():
    def f(p, x):
        y = x @ p["w1"]
        return jax.nn.relu(y + p["b1"]) * y

    p, x0 = _mlp_params(), np.zeros((3, 8), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["jax.nn.relu"]
    assert any("dot_general) has 2 users" in m for m in _missed(fused)), _missed(fused)


def test_bias_along_the_wrong_axis_is_not_fused():
    r = np.random.default_rng(2)
    p = {"w": r.standard_normal((8, 8)).astype(np.float32), "b": r.standard_normal((6, 1)).astype(np.float32)}

    def f(p, x):
        return jax.nn.relu(x @ p["w"] + p["b"])  # b broadcasts along the batch axis

    x0 = np.zeros((6, 8), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["jax.nn.relu"]
    assert any("does not broadcast along the output channel" in m for m in _missed(fused))
    x = r.standard_normal((6, 8)).astype(np.float32)
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x))


def test_bias_that_is_an_input_is_not_fused():
    def f(x, b):
        return jax.nn.relu(x @ jnp.ones((8, 4), jnp.float32) + b)

    fused = tensorsmith.compile(f, np.zeros((2, 8), np.float32), np.zeros(4, np.float32),
                                passes="canonicalize,fuse")
    assert "fused.dense_bias_relu" not in _fused_names(fused.graph)
    assert any("is not a param or constant" in m for m in _missed(fused)), _missed(fused)


# --------------------------------------------------------------------------- ONNX
def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_onnx_mlp_fused_matches_unfused_and_onnxruntime():
    m = models.mlp_dynamic()
    unfused, fused = tensorsmith.compile(m, passes=[]), tensorsmith.compile(m, passes="fuse")
    assert _fused_names(fused.graph) == ["fused.dense_bias_relu", "fused.dense_bias_tanh",
                                         "fused.dense_bias_sigmoid"]
    for batch in (1, 7):
        feeds = models.mlp_inputs(batch, seed=batch)
        got = fused(*feeds.values())
        _same(got, unfused(*feeds.values()))
        _same(got, _ort(m, feeds), rtol=1e-4, atol=1e-5)


def test_onnx_resnet_fused_matches_unfused_and_onnxruntime():
    m = models.resnet_cnn()
    unfused, fused = tensorsmith.compile(m, passes=[]), tensorsmith.compile(m, passes="canonicalize,fuse")
    assert "fused.dense_bias" in _fused_names(fused.graph)  # the classifier Gemm
    feeds = models.resnet_inputs(2, seed=5)
    got = fused(*feeds.values())
    _same(got, unfused(*feeds.values()), rtol=1e-4, atol=1e-4)
    _same(got, _ort(m, feeds), rtol=1e-3, atol=1e-4)


def _conv_model(act: str, bias_shape=None, cout=6, opset=17):
    r = np.random.default_rng(4)
    inits = [numpy_helper.from_array(r.standard_normal((cout, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(r.standard_normal(cout).astype(np.float32), "b")]
    if bias_shape is None:
        nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    else:  # a separate Add whose bias broadcasts as ``bias_shape`` says
        inits.append(numpy_helper.from_array(r.standard_normal(bias_shape).astype(np.float32), "b2"))
        nodes = [h.make_node("Conv", ["x", "w"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
                 h.make_node("Add", ["c0", "b2"], ["c"], name="bias")]
    nodes.append(h.make_node(act, ["c"], ["y"], name="act"))
    g = h.make_graph(nodes, "conv_act", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", cout, 8, 8])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 20 else 9
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("act,name", [("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"),
                                      ("Gelu", "gelu")])
def test_onnx_conv_bias_activation_fuses(act, name):
    m = _conv_model(act, opset=20 if act == "Gelu" else 17)
    unfused = tensorsmith.compile(m, passes=[])
    fused = tensorsmith.compile(m, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == [f"fused.conv_bias_{name}"], fused.graph
    verify(fused.graph)
    feeds = {"x": np.random.default_rng(9).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    got = fused(feeds["x"])
    _same(got, unfused(feeds["x"]), rtol=1e-4, atol=1e-4)
    _same(got, _ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_onnx_conv_bias_along_a_spatial_axis_is_not_fused():
    m = _conv_model("Relu", bias_shape=(1, 1, 8))  # broadcasts along W, not the channels
    fused = tensorsmith.compile(m, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == []
    assert any("does not broadcast along the output channel" in r for r in _missed(fused))
    feeds = {"x": np.random.default_rng(9).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    _same(fused(feeds["x"]), _ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_onnx_conv_bias_added_per_channel_fuses():
    m = _conv_model("Relu", bias_shape=(6, 1, 1))
    fused = tensorsmith.compile(m, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.conv_bias_relu"]
    feeds = {"x": np.random.default_rng(9).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    _same(fused(feeds["x"]), _ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_fuse_is_not_in_the_default_pipeline():
    from tensorsmith.passes import PIPELINES
    assert "fuse" not in PIPELINES["default"].replace("fuse-", "")


def test_silu_written_out_fuses_in_jax_and_onnx():
    r = np.random.default_rng(6)
    p = {"w": r.standard_normal((8, 16)).astype(np.float32), "b": r.standard_normal(16).astype(np.float32)}

    def f(p, x):
        y = x @ p["w"] + p["b"]
        return y * jax.lax.logistic(y)

    x0 = np.zeros((4, 8), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.dense_bias_silu"], fused.graph
    x = r.standard_normal((4, 8)).astype(np.float32)
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x))

    m = _conv_model("Sigmoid")
    m.graph.node[-1].output[0] = "s"
    m.graph.node.append(h.make_node("Mul", ["c", "s"], ["y"], name="silu"))
    onnx.checker.check_model(m)
    fused = tensorsmith.compile(m, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.conv_bias_silu"], fused.graph
    feeds = {"x": r.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    _same(fused(feeds["x"]), _ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_onnx_clip_fuses_as_clip():
    m = _conv_model("Clip")
    lo = numpy_helper.from_array(np.array(-0.5, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(2.0, np.float32), "hi")
    m.graph.initializer.extend([lo, hi])
    m.graph.node[-1].input.extend(["lo", "hi"])
    onnx.checker.check_model(m)
    fused = tensorsmith.compile(m, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.conv_bias_clip"], fused.graph
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    _same(fused(feeds["x"]), _ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_relu6_written_out_fuses_as_one_clip():
    r = np.random.default_rng(8)
    p = {"w": r.standard_normal((8, 16)).astype(np.float32), "b": r.standard_normal(16).astype(np.float32)}

    def f(p, x):
        return jnp.minimum(jnp.maximum(x @ p["w"] + p["b"], 0.0), 6.0)

    x0 = np.zeros((4, 8), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.dense_bias_clip"], fused.graph
    x = r.standard_normal((4, 8)).astype(np.float32) * 4
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x))


def _conv_fn(layout: str, groups: int):
    def f(p, x):
        dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
        y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=dn,
                                         feature_group_count=groups)
        b = p["b"] if layout == "NHWC" else p["b"][:, None, None]
        return jax.nn.relu(y + b)
    return f


@pytest.mark.parametrize("layout,groups", [("NHWC", 1), ("NCHW", 1), ("NHWC", 4), ("NCHW", 4)])
def test_jax_conv_bias_relu_fuses_in_both_layouts_grouped_and_depthwise(layout, groups):
    r = np.random.default_rng(11)
    cin, cout = 4, 8
    w_shape = (3, 3, cin // groups, cout) if layout == "NHWC" else (cout, cin // groups, 3, 3)
    p = {"w": r.standard_normal(w_shape).astype(np.float32), "b": r.standard_normal(cout).astype(np.float32)}
    x_shape = (2, 6, 6, cin) if layout == "NHWC" else (2, cin, 6, 6)
    f = _conv_fn(layout, groups)
    x0 = np.zeros(x_shape, np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.conv_bias_relu"], fused.graph
    x = r.standard_normal(x_shape).astype(np.float32)
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x), rtol=1e-4, atol=1e-4)


def test_weight_on_the_left_takes_its_channel_from_the_weight():
    r = np.random.default_rng(12)
    p = {"w": r.standard_normal((16, 8)).astype(np.float32), "b": r.standard_normal((16, 1)).astype(np.float32)}

    def f(p, x):  # x holds one sample per column: the channel is axis 0
        return jnp.tanh(p["w"] @ x + p["b"])

    x0 = np.zeros((8, 5), np.float32)
    fused = tensorsmith.compile(f, x0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["fused.dense_bias_tanh"], fused.graph
    x = r.standard_normal((8, 5)).astype(np.float32)
    _same(fused(x), tensorsmith.compile(f, x0, params=p, passes=[])(x))


def test_product_of_two_activations_is_not_a_dense_layer():
    r = np.random.default_rng(13)
    p = {"b": r.standard_normal(6).astype(np.float32)}

    def f(p, q, k):  # attention scores plus a bias: no weight, so no dense fusion
        return jax.nn.relu(q @ k.T + p["b"])

    q0, k0 = np.zeros((6, 4), np.float32), np.zeros((6, 4), np.float32)
    fused = tensorsmith.compile(f, q0, k0, params=p, passes="canonicalize,fuse")
    assert _fused_names(fused.graph) == ["jax.nn.relu"], fused.graph


# --------------------------------------------------------------------------- every pattern, both forms
import fuse_cases  # noqa: E402


def _compile_jax(build, seed, passes):
    fn, args, params = build(seed)
    kw = {} if params is None else {"params": params}
    return tensorsmith.compile(fn, *args, passes=passes, **kw), args


@pytest.mark.parametrize("case", sorted(fuse_cases.CASES))
def test_every_pattern_fires_on_the_jax_form(case):
    name, build, _ = fuse_cases.CASES[case]
    fused, args = _compile_jax(build, 0, "default,fuse")
    assert name in _fused_names(fused.graph), (case, fused.graph.to_text())
    verify(fused.graph)
    unfused, _ = _compile_jax(build, 0, "default")
    for seed in (1, 2):  # fresh inputs, not the ones the model was traced with
        _, args, _ = build(seed)
        _same(fused(*args), unfused(*args), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", sorted(fuse_cases.CASES))
def test_every_pattern_fires_on_the_onnx_form(case):
    name, _, build = fuse_cases.CASES[case]
    m, _ = build(0)
    fused = tensorsmith.compile(m, passes="default,fuse")
    assert name in _fused_names(fused.graph), (case, fused.graph.to_text())
    verify(fused.graph)
    unfused = tensorsmith.compile(m, passes="default")
    for seed in (1, 2):
        _, feeds = build(seed)
        got = fused(*feeds.values())
        _same(got, unfused(*feeds.values()), rtol=2e-5, atol=2e-5)
        _same(got, _ort(m, feeds), rtol=1e-4, atol=1e-4)
