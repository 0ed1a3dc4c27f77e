"""Softmax / log-softmax lowerings: no overflow whatever XLA fuses (issue 15).

Oracle: float64 numpy (max-subtracted formula, run eagerly); rows holding +inf are checked
against the limit (the +inf entries share the mass equally).
"""
from __future__ import annotations

from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import onnx
import pytest

import tensorsmith as ts
from tensorsmith.ir import parse

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"


def ref_softmax(x, axis, log=False):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    posinf = np.isposinf(m)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d = np.where(posinf, np.where(np.isposinf(x), 0.0, -np.inf), x - np.where(posinf, 0, m))
        e = np.exp(d)
        s = np.sum(e, axis=axis, keepdims=True)
        return d - np.log(s) if log else e / s


def _graph(op, dtype, shape, axis, pooled):
    """softmax of ``x`` or of a global average pool of ``x`` (the fused FMA case)."""
    dims = ",".join(map(str, shape))
    if pooled:
        return parse(f"""graph @m(%x: {dtype}[{dims},13,13]) {{
  %s: {dtype}[{dims}] = reduce_sum(%x) {{axes=({len(shape)}, {len(shape) + 1})}}
  %c: {dtype}[] = constant() {{dtype="{dtype}", value=169.0}}
  %p: {dtype}[{dims}] = div(%s, %c)
  %y: {dtype}[{dims}] = {op}(%p) {{axis={axis}}}
  return %y
}}
""")
    return parse(f"""graph @m(%x: {dtype}[{dims}]) {{
  %y: {dtype}[{dims}] = {op}(%x) {{axis={axis}}}
  return %y
}}
""")


EXTREME = np.array([
    [1e30, 1e30, 1e30, 1e30],
    [-1e30, -1e30, -1e30, -1e30],
    [1e30, -1e30, 0.0, 1.0],
    [np.inf, 0.0, np.inf, -np.inf],
    [-np.inf, 0.0, 1.0, -np.inf],
    [3e38, 3e38, -3e38, 0.0],
    [6.76909e9, 6.76909e9, 6.76909e9, 6.76909e9],
    [0.0, 0.0, 0.0, 0.0],
], np.float32)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_extreme_logits_match_float64(op):
    cm = ts.compile(_graph(op, "f32", EXTREME.shape, 1, pooled=False))
    got = np.asarray(cm(EXTREME)[0], np.float64)
    # rounded to f32: a log-probability of -6e38 is -inf in f32
    with np.errstate(over="ignore"):
        want = ref_softmax(EXTREME, 1, log=op == "log_softmax").astype(np.float32)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("value", [6.76909e9, 1e30, -3e20, 1.0])
def test_equal_pooled_logits_do_not_overflow(op, value):
    # Global average pool then softmax: XLA:CPU fuses the pool's scaling into x - max.
    x = np.full((2, 1000, 13, 13), value, np.float32)
    cm = ts.compile(_graph(op, "f32", (2, 1000), 1, pooled=True))
    got = np.asarray(cm(x)[0], np.float64)
    want = ref_softmax(x.astype(np.float64).sum((2, 3)) / 169.0, 1, log=op == "log_softmax")
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype,np_dtype,tol", [("f16", np.float16, 2e-3),
                                                ("bf16", ml_dtypes.bfloat16, 2e-2)])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_low_precision(op, dtype, np_dtype, tol):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((4, 64)) * 20,
                        np.full((1, 64), 6e4 if dtype == "f16" else 1e30),
                        np.full((1, 64), -6e4 if dtype == "f16" else -1e30)]).astype(np_dtype)
    cm = ts.compile(_graph(op, dtype, x.shape, -1, pooled=False))
    got = np.asarray(cm(x)[0]).astype(np.float64)
    want = ref_softmax(x.astype(np.float64), -1, log=op == "log_softmax")
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("fn", [jax.nn.softmax, jax.nn.log_softmax])
def test_jax_nn_composites_do_not_overflow(fn):
    def model(x):
        return fn(x.sum(axis=(2, 3)) / 169.0, axis=1)
    x = np.full((1, 1000, 13, 13), 6.76909e9, np.float32)
    g = ts.trace(model, x)
    assert any(n.op == "composite" and n.attrs["name"] == f"jax.nn.{fn.__name__}"
               for n in g.nodes)
    got = np.asarray(ts.compile(model, x)(x), np.float64)
    want = ref_softmax(x.astype(np.float64).sum((2, 3)) / 169.0, 1, log=fn is jax.nn.log_softmax)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_jax_nn_softmax_multi_axis_matches_jax():
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32) * 30
    model = lambda x: jax.nn.softmax(x, axis=(1, 2))  # noqa: E731
    with jax.disable_jit():
        want = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(ts.compile(model, x)(x)), want, rtol=1e-5, atol=1e-7)


def test_light_squeezenet_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(str(LIGHT))
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = np.asarray(ts.compile(str(LIGHT))(x)[0])
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_a_rewritten_softmax_composite_runs_its_own_body():
    # Only jax's exact softmax body is replaced by the safe lowering; an edited body is kept.
    g = parse("""graph @m(%x: f32[2,3]) {
  %y: f32[2,3] = composite(%x) {name="jax.nn.softmax"} {
    ^jax.nn.softmax(%a: f32[2,3]):
      %m: f32[2] = reduce_max(%a) {axes=(1,)}
      %b: f32[2,1] = broadcast_in_dim(%m) {broadcast_dimensions=(0,), shape=(2, 1)}
      %d: f32[2,3] = sub(%a, %b)
      return %d
  }
  return %y
}
""")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(np.asarray(ts.compile(g)(x)[0]), x - x.max(1, keepdims=True))


@pytest.mark.parametrize("value", [6.76909e9, 1e30, 1.0])
def test_onnx_reduce_log_sum_exp_of_pooled_equal_values(value):
    # the same fused FMA in ONNX ReduceLogSumExp gave inf where onnxruntime gives the value
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("ReduceLogSumExp", ["p"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 1000, 13, 13])],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.full((2, 1000, 13, 13), value, np.float32)
    x[1] = np.random.default_rng(0).standard_normal((1000, 13, 13)) * value
    want = ort.InferenceSession(model).run(None, {"x": x})[0]
    got = np.asarray(ts.compile(model)(x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5)
