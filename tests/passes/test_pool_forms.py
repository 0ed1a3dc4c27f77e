"""rewrite-pool: small max/min/sum pooling windows as element-wise combinations of strided
slices; numerics against onnxruntime, the unrewritten model and the JAX function."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from jax import lax
from onnx import TensorProto as T, helper as h

import os
import sys

import tensorsmith
from tensorsmith.frontends.onnx import import_onnx
from tensorsmith.passes import PassContext, PassOptionError, run_pipeline

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import run  # noqa: E402


def _pool_model(op: str, hw=(13, 11), c=5, **attrs) -> onnx.ModelProto:
    """x -> Relu -> <op>(attrs) -> y, with a symbolic batch."""
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node(op, ["r"], ["y"], **attrs)]
    g = h.make_graph(nodes, "pool", [h.make_tensor_value_info("x", T.FLOAT, ["N", c, *hw])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _one(out) -> np.ndarray:
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


CASES = {  # id: (op, attrs, taps)
    "max-3x3-s2-asymmetric-pads": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                   pads=[0, 1, 1, 0]), 9),
    "max-2x2-s2": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), 4),
    "max-3x3-dilated": ("MaxPool", dict(kernel_shape=[3, 3], dilations=[2, 1], pads=[2, 1, 2, 1]), 9),
    "max-3x2-ceil": ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1), 6),
    "avg-3x3-s1-pads": ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 9),
    "avg-3x3-s2-include-pad": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                   pads=[1, 1, 1, 1], count_include_pad=1), 9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pools_as_slices_match_onnxruntime(case):
    op, attrs, taps = CASES[case]
    m = _pool_model(op, **attrs)
    cm = tensorsmith.compile(m, passes="rewrite-pool,dce")
    plain = tensorsmith.compile(m, passes="none")
    text = cm.ir()
    assert "reduce_window" not in text, text
    assert len(re.findall(r"= slice\(", text)) == taps, text
    combine = "max" if op == "MaxPool" else "add"
    assert len(re.findall(rf"= {combine}\(", text)) == taps - 1, text
    rec = cm.history.find("rewrite-pool")
    assert [r.kind for r in rec.remarks] == ["applied"], rec.remarks
    assert re.search(rf"{'max' if op == 'MaxPool' else 'sum'} pool \(\d+x\d+\) as element-wise "
                     f"{combine} of strided slices", str(rec.remarks[0]))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 13, 11)).astype(np.float32)
        got = _one(cm(x))
        np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
        if op == "MaxPool":  # max is exact in any order
            np.testing.assert_array_equal(got, _one(plain(x)))
        else:
            np.testing.assert_allclose(got, _one(plain(x)), rtol=1e-6, atol=1e-6)


def test_jax_pools_are_rewritten_and_match():
    def f(x):
        mx = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
        sm = lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
        return mx, sm
    x = np.random.default_rng(0).standard_normal((2, 9, 8, 3)).astype(np.float32)
    cm = tensorsmith.compile(f, x, passes="rewrite-pool,dce")
    assert "reduce_window" not in cm.ir()
    assert len(cm.history.find("rewrite-pool").remarks.of_kind("applied")) == 2
    want = f(jnp.asarray(x))
    got = cm(x)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-6, atol=1e-6)


def test_large_and_unsupported_windows_are_left_with_reasons():
    m = _pool_model("MaxPool", kernel_shape=[5, 5])
    cm = tensorsmith.compile(m, passes="rewrite-pool")
    assert "reduce_window" in cm.ir()
    assert [str(r) for r in cm.history.find("rewrite-pool").remarks] == [
        f"[rewrite-pool] missed: %{_pool_node(cm)}: left max pool: its window has 25 elements "
        "(more than max_taps=16)"]
    cm = tensorsmith.compile(m, passes="rewrite-pool{max_taps=25}")
    assert "reduce_window" not in cm.ir()

    text = """
        graph @main(%x: f32[4,4], %i: i32[4,4]) {
          %1: f32[3,3] = reduce_window(%x) {kind="prod", window_dimensions=(2, 2)}
          %2: i32[3,3] = reduce_window(%i) {kind="max", window_dimensions=(2, 2)}
          %3: f32[6,6] = reduce_window(%x) {kind="max", window_dimensions=(2, 2), base_dilation=(2, 2), padding=((0, 0), (0, 0))}
          return %1, %2, %3
        }"""
    before, after, ctx = run(text, "rewrite-pool")
    assert after.to_text() == before.to_text()
    assert sorted(r.message for r in ctx.remarks) == [
        "left max pool: base_dilation > 1",
        "left max pool: its element type i32 is not a float",
        "left prod pool: kind 'prod' has no element-wise form here"]


def _pool_node(cm) -> str:
    return next(r.node for r in cm.history.find("rewrite-pool").remarks).lstrip("%")


def test_other_targets_keep_the_pools():
    graph = import_onnx(_pool_model("MaxPool", kernel_shape=[3, 3]))
    ctx = PassContext(target="gpu")
    out, _ = run_pipeline(graph, "rewrite-pool", ctx)
    assert out.to_text() == graph.to_text()
    assert [str(r) for r in ctx.remarks] == [
        "[rewrite-pool] note: pools kept: the rewrite is for XLA:CPU, the target is gpu"]


def test_max_taps_is_checked():
    with pytest.raises(PassOptionError, match=r"pass 'rewrite-pool' option 'max_taps'"):
        tensorsmith.compile(_pool_model("MaxPool", kernel_shape=[3, 3]),
                            passes="rewrite-pool{max_taps=0}")


def test_optimize_pipeline_rewrites_pools_between_nhwc_convs():
    rng = np.random.default_rng(0)
    w1 = h.make_tensor("w1", T.FLOAT, [6, 3, 3, 3], rng.standard_normal(162).astype(np.float32))
    w2 = h.make_tensor("w2", T.FLOAT, [4, 6, 1, 1], rng.standard_normal(24).astype(np.float32))
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("Conv", ["p1", "w2"], ["y"], kernel_shape=[1, 1])]
    g = h.make_graph(nodes, "cnn", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 15, 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [w1, w2])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    cm = tensorsmith.compile(m, passes="optimize")
    text = cm.ir()
    assert "reduce_window" not in text and len(re.findall(r"= slice\(", text)) == 9, text
    # the pool sits inside the NHWC region: one transpose in, one out, none around the pool
    assert len(re.findall(r"= transpose\(", text)) == 2, text
    x = rng.standard_normal((2, 3, 15, 12)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(_one(cm(x)), want, rtol=1e-4, atol=1e-4)


def test_overlapping_pool_after_costly_elementwise_is_left():
    # AlexNet: LRN (pow, div) -> 3x3/2 max pool; the slices would recompute pow per window
    nodes = [h.make_node("LRN", ["x"], ["l"], size=3),
             h.make_node("MaxPool", ["l"], ["y"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("MaxPool", ["l"], ["z"], kernel_shape=[2, 2], strides=[2, 2])]
    g = h.make_graph(nodes, "lrn", [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, 13, 11])],
                     [h.make_tensor_value_info("y", T.FLOAT, None),
                      h.make_tensor_value_info("z", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    cm = tensorsmith.compile(m, passes="rewrite-pool")
    rec = cm.history.find("rewrite-pool").remarks
    missed = [r.message for r in rec.of_kind("missed")]
    assert len(missed) == 1 and re.fullmatch(
        r"left max pool: its input is computed by (pow|div), which XLA would recompute for each "
        r"overlapping window", missed[0]), missed
    applied = [r.message for r in rec.of_kind("applied")]
    assert "max pool (2x2) as element-wise max of strided slices" in applied, applied
    x = np.random.default_rng(0).standard_normal((2, 5, 13, 11)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for got, w in zip(cm(x), want):
        np.testing.assert_allclose(np.asarray(got), w, rtol=1e-5, atol=1e-5)
