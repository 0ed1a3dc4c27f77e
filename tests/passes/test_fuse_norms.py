"""fuse: layer norm and RMS norm written out become fused.layer_norm / fused.rms_norm."""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper as h

sys.path.insert(0, os.path.dirname(__file__))
import fuse_cases as fc  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.ir import parse, verify  # noqa: E402


_names, _missed, _close = fc.composite_names, fc.fuse_missed, fc.close


def _ln64(x, axes, g=None, b=None, eps=1e-5):
    """float64 numpy layer norm: the oracle."""
    x = np.asarray(x, np.float64)
    m = x.mean(axis=axes, keepdims=True)
    y = (x - m) / np.sqrt(((x - m) ** 2).mean(axis=axes, keepdims=True) + eps)
    return y * (1 if g is None else g) + (0 if b is None else b)


def _ln(axes, eps=1e-5):
    def f(p, x):
        m = jnp.mean(x, axes, keepdims=True)
        c = x - m
        return c * jax.lax.rsqrt(jnp.mean(c * c, axes, keepdims=True) + eps) * p["g"] + p["b"]
    return f


def test_layer_norm_ir_text_and_round_trip():
    f, args, p = fc.jax_layer_norm("plain")(0)
    c = tensorsmith.compile(f, *args, params=p, passes="default,fuse")
    text = c.graph.to_text()
    (line,) = [ln for ln in text.splitlines() if "fused.layer_norm" in ln and "composite" in ln]
    assert line.strip().startswith("%") and "= composite(%x, @g, @b) {axes=(2,), " in line
    assert 'name="fused.layer_norm", offset=true, scale=true}' in line
    assert "epsilon=1e-05" in line or "epsilon=9.99999974" in line
    verify(c.graph)
    assert parse(text, params=dict(c.graph.params)).to_text() == text
    x = fc.rand(3, 3, 7, fc.HID)
    _close(c(x), _ln64(x, -1, p["g"], p["b"]), 1e-4)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layer_norm_over_channels_in_both_layouts(layout):
    r = np.random.default_rng(1)
    axis = 1 if layout == "NCHW" else 3
    gshape = (5, 1, 1) if layout == "NCHW" else (5,)
    p = {"g": r.standard_normal(gshape).astype(np.float32), "b": r.standard_normal(gshape).astype(np.float32)}
    shape = (2, 5, 4, 4) if layout == "NCHW" else (2, 4, 4, 5)
    f = _ln((axis,))
    x0 = np.zeros(shape, np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"], c.graph.to_text()
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["axes"] == (axis,)
    x = r.standard_normal(shape).astype(np.float32) * 4 + 2
    _close(c(x), tensorsmith.compile(f, x0, params=p, passes="default")(x), 1e-4)
    _close(c(x), _ln64(x, axis, p["g"], p["b"]), 1e-4)


def test_layer_norm_over_two_axes_with_broadcast_weights():
    r = np.random.default_rng(2)
    p = {"g": r.standard_normal((1, 6, 8)).astype(np.float32), "b": r.standard_normal((8,)).astype(np.float32)}
    f = _ln((1, 2))
    x0 = np.zeros((3, 6, 8), np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"]
    x = r.standard_normal((3, 6, 8)).astype(np.float32)
    _close(c(x), _ln64(x, (1, 2), p["g"], p["b"]), 1e-4)


def test_weight_along_another_axis_is_not_a_layer_norm_weight():
    r = np.random.default_rng(3)
    p = {"g": r.standard_normal((7, 1)).astype(np.float32), "b": np.zeros(1, np.float32) + 0.5}
    f = _ln((-1,))
    x0 = np.zeros((7, 16), np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"]  # the norm itself, the odd weight outside
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["scale"] is False
    assert any("did not fuse the weight %g f32[7,1]" in m and "normalized axes" in m
               for m in _missed(c)), _missed(c)
    x = r.standard_normal((7, 16)).astype(np.float32)
    _close(c(x), _ln64(x, -1, p["g"], p["b"]), 1e-4)


def test_shared_intermediate_is_not_fused_and_says_why():
    p = {"g": fc.rand(1, fc.HID), "b": fc.rand(2, fc.HID)}

    def f(p, x):  # the normalized value before the weights is also returned
        m = jnp.mean(x, -1, keepdims=True)
        c = x - m
        n = c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-5)
        return n * p["g"] + p["b"], n

    x0 = np.zeros((2, fc.HID), np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert "fused.layer_norm" in _names(c.graph)  # the inner norm (the shared value) still fuses
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["scale"] is False and node.attrs["offset"] is False
    assert any("did not fuse the layer norm with the weight that follows" in m and "2 users" in m
               for m in _missed(c)), _missed(c)
    x = fc.rand(5, 2, fc.HID)
    for a, b in zip(c(x), tensorsmith.compile(f, x0, params=p, passes="default")(x)):
        _close(a, b)


def test_variance_read_twice_is_not_fused():
    def f(x):
        m = jnp.mean(x, -1, keepdims=True)
        v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5), v

    x0 = np.zeros((2, fc.HID), np.float32)
    c = tensorsmith.compile(f, x0, passes="default,fuse")
    assert _names(c.graph) == []
    assert any("user(s) outside the match" in m for m in _missed(c)), _missed(c)


def test_epsilon_that_is_an_input_is_not_fused():
    def f(x, eps):
        m = jnp.mean(x, -1, keepdims=True)
        c = x - m
        return c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + eps)

    c = tensorsmith.compile(f, np.zeros((2, 8), np.float32), np.float32(1e-5), passes="default,fuse")
    assert _names(c.graph) == []
    assert any("epsilon added to the variance" in m and "not a constant" in m for m in _missed(c))


def test_bf16_layer_norm_is_computed_in_f32():
    """The fused rule normalizes in f32: closer to the float64 oracle than bf16 arithmetic."""
    r = np.random.default_rng(4)
    bf16 = ml_dtypes.bfloat16
    p = {"g": r.standard_normal(64).astype(bf16), "b": r.standard_normal(64).astype(bf16)}
    f = _ln((-1,))
    x0 = np.zeros((16, 64), bf16)
    fused = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(fused.graph) == ["fused.layer_norm"]
    unfused = tensorsmith.compile(f, x0, params=p, passes="default")
    x = (r.standard_normal((16, 64)) * 3 + 40).astype(bf16)  # a large mean: bf16 cancels badly
    want = _ln64(x.astype(np.float64), -1, p["g"].astype(np.float64), p["b"].astype(np.float64))
    err_fused = np.abs(np.asarray(fused(x), np.float64) - want).max()
    err_unfused = np.abs(np.asarray(unfused(x), np.float64) - want).max()
    assert np.asarray(fused(x)).dtype == bf16
    assert err_fused < 0.1 < err_unfused, (err_fused, err_unfused)


def test_rms_norm_fuses_and_matches_float64():
    f, args, p = fc.jax_rms_norm(0)
    c = tensorsmith.compile(f, *args, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.rms_norm"]
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["scale"] is True and node.attrs["offset"] is False and node.attrs["axes"] == (2,)
    x = fc.rand(9, 3, 7, fc.HID).astype(np.float64)
    want = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * p["g"]
    _close(c(x.astype(np.float32)), want, 1e-4)


def test_onnx_rms_normalization_op_fuses():
    p = fc.rand(1, fc.HID)
    nodes = [h.make_node("RMSNormalization", ["x", "g"], ["y"], axis=-1, epsilon=1e-6)]
    m = fc.model(nodes, [("x", ["N", fc.HID])], [("y", ["N", fc.HID])], [("g", p)], opset=23)
    c = tensorsmith.compile(m, passes="default,fuse")
    assert _names(c.graph) == ["fused.rms_norm"], c.graph.to_text()
    x = fc.rand(2, 5, fc.HID) * 3
    want = x.astype(np.float64) / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * p
    _close(c(x)[0], want, 1e-4)
    _close(c(x)[0], tensorsmith.compile(m, passes="default")(x)[0])


def test_onnx_layer_normalization_over_two_axes_matches_onnxruntime():
    g = fc.rand(1, 7, fc.HID)
    nodes = [h.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-2, epsilon=1e-3)]
    m = fc.model(nodes, [("x", ["N", 7, fc.HID])], [("y", ["N", 7, fc.HID])], [("g", g)])
    c = tensorsmith.compile(m, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"]
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["axes"] == (1, 2) and abs(node.attrs["epsilon"] - 1e-3) < 1e-9
    x = fc.rand(3, 4, 7, fc.HID) * 2 + 1
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(c(x)[0], sess.run(None, {"x": x})[0], 1e-4)


def test_offset_along_another_axis_leaves_the_offset_out():
    r = np.random.default_rng(8)
    p = {"g": r.standard_normal(16).astype(np.float32), "b": r.standard_normal((7, 1)).astype(np.float32)}
    f = _ln((-1,))
    x0 = np.zeros((7, 16), np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"]  # with its scale, without the offset
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["scale"] is True and node.attrs["offset"] is False
    assert any("did not fuse the offset %b f32[7,1]" in m and "normalized axes" in m
               for m in _missed(c)), _missed(c)
    x = r.standard_normal((7, 16)).astype(np.float32)
    _close(c(x), _ln64(x, -1, p["g"], p["b"]), 1e-4)


@pytest.mark.parametrize("with_weights", [True, False])
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_jax_nn_standardize_composite_is_seen_through(with_weights, eps):
    """jax.nn.standardize arrives as a composite; with gamma/beta after it, one layer norm."""
    p = {"g": fc.rand(1, fc.HID), "b": fc.rand(2, fc.HID)}
    kw = {} if eps is None else {"epsilon": eps}

    def f(p, x):
        y = jax.nn.standardize(x, axis=-1, **kw)
        return y * p["g"] + p["b"] if with_weights else y

    x0 = np.zeros((3, fc.HID), np.float32)
    c = tensorsmith.compile(f, x0, params=p, passes="default,fuse")
    assert _names(c.graph) == ["fused.layer_norm"], c.graph.to_text()
    (node,) = [n for n in c.graph.nodes if n.op == "composite"]
    assert node.attrs["scale"] is with_weights and node.attrs["offset"] is with_weights
    assert abs(node.attrs["epsilon"] - (eps or 1e-5)) < 1e-9
    x = fc.rand(4, 3, fc.HID) * 2 + 3
    want = _ln64(x, -1, p["g"] if with_weights else None, p["b"] if with_weights else None, eps or 1e-5)
    _close(c(x), want, 1e-4)
    _close(c(x), tensorsmith.compile(f, x0, params=p, passes="default")(x))
