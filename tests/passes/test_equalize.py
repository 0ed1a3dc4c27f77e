"""equalize (cross-layer equalization) and smooth-quant: the model's outputs do not change, the
ranges they promise to balance are balanced, and what they cannot touch is left alone."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

import tensorsmith
from tensorsmith.passes import MissingPassData

RNG = np.random.default_rng(0)


def _skewed(shape, axis, rng):
    """Weights whose channels along ``axis`` differ in range by orders of magnitude."""
    w = rng.normal(size=shape)
    scale = np.exp(rng.normal(size=shape[axis]) * 2)
    sh = [1] * len(shape)
    sh[axis] = shape[axis]
    return (w * scale.reshape(sh)).astype(np.float32)


def _mlp_params(rng):
    return {"w1": _skewed((8, 16), 1, rng), "b1": rng.normal(size=16).astype(np.float32),
            "w2": rng.normal(size=(16, 4)).astype(np.float32),
            "b2": rng.normal(size=4).astype(np.float32)}


def _mlp(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _applied(cm, name):
    return [r for rec in cm.history if rec.name == name for r in rec.remarks.of_kind("applied")]


def test_equalize_keeps_outputs_and_balances_channel_ranges():
    rng = np.random.default_rng(1)
    p = _mlp_params(rng)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    cm = tensorsmith.compile(_mlp, x, params=p, passes="equalize")
    np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(_mlp(p, x)), rtol=1e-5, atol=1e-5)
    q = cm.graph.params
    r1, r2 = np.abs(q["w1"]).max(0), np.abs(q["w2"]).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # each channel: same range on both sides
    before = np.abs(p["w1"]).max(0)
    assert before.max() / before.min() > 10 * (r1.max() / r1.min())
    assert len(_applied(cm, "equalize")) == 1


def test_equalize_leaves_a_non_homogeneous_activation_and_a_shared_weight_alone():
    rng = np.random.default_rng(2)
    p = _mlp_params(rng)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    tanh = lambda p, x: jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]  # noqa: E731
    cm = tensorsmith.compile(tanh, x, params=p, passes="equalize")
    for k in ("w1", "b1", "w2"):
        np.testing.assert_array_equal(cm.graph.params[k], p[k])
    shared = lambda p, x: (jax.nn.relu(x @ p["w1"]) @ p["w2"], x @ p["w1"])  # noqa: E731
    cm = tensorsmith.compile(shared, x, params=p, passes="equalize")
    np.testing.assert_array_equal(cm.graph.params["w1"], p["w1"])


def _conv_relu_conv_onnx(rng):
    w1 = _skewed((6, 3, 3, 3), 0, rng)
    b1 = rng.normal(size=6).astype(np.float32)
    w2 = rng.normal(size=(4, 6, 1, 1)).astype(np.float32)
    gw = rng.normal(size=(5, 4 * 4 * 4)).astype(np.float32)  # Gemm transB: [N, K]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                        (gw, "gw"))]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"]),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("Flatten", ["r2"], ["f"]),
             h.make_node("Gemm", ["f", "gw"], ["y"], transB=1)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 4, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_equalize_on_onnx_convs_matches_onnxruntime():
    rng = np.random.default_rng(3)
    model = _conv_relu_conv_onnx(rng)
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cm = tensorsmith.compile(model.SerializeToString(), passes="equalize")
    got = cm(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    q = cm.graph.params
    r1 = np.abs(q["w1"]).reshape(6, -1).max(1)
    r2 = np.abs(q["w2"]).transpose(1, 0, 2, 3).reshape(6, -1).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    assert len(_applied(cm, "equalize")) == 1  # the conv → flatten → Gemm pair is not linear-linear


def _ln(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b


def _block_params(rng, d=16):
    gamma = rng.uniform(0.5, 1.5, d)
    gamma[3] *= 40.0  # one outlier channel, as in real transformers
    return {"g": gamma.astype(np.float32), "b": rng.normal(size=d).astype(np.float32),
            "wq": rng.normal(size=(d, d)).astype(np.float32),
            "wk": rng.normal(size=(d, d)).astype(np.float32),
            "w1": rng.normal(size=(d, 2 * d)).astype(np.float32),
            "b1": rng.normal(size=2 * d).astype(np.float32),
            "w2": rng.normal(size=(2 * d, d)).astype(np.float32)}


def _block(p, x):
    hn = _ln(x, p["g"], p["b"])
    a = jnp.tanh(hn @ p["wq"]) * (hn @ p["wk"])
    return jax.nn.gelu(a @ p["w1"] + p["b1"]) @ p["w2"]


def _int8_error(x, w):
    """Relative error of x @ w with x quantized per tensor to int8 (symmetric)."""
    s = np.abs(x).max() / 127
    xq = np.clip(np.round(x / s), -127, 127) * s
    return np.linalg.norm(xq @ w - x @ w) / np.linalg.norm(x @ w)


def test_smooth_quant_keeps_outputs_and_shrinks_activation_quantization_error():
    rng = np.random.default_rng(4)
    p = _block_params(rng)
    x = rng.normal(size=(3, 9, 16)).astype(np.float32)
    cal = [(rng.normal(size=(3, 9, 16)).astype(np.float32),) for _ in range(4)]
    cm = tensorsmith.compile(_block, x, params=p, passes="smooth-quant{alpha=0.5}",
                             calibration=cal)
    np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(_block(p, x)), rtol=2e-4,
                               atol=2e-4 * float(np.abs(_block(p, x)).max()))
    q = cm.graph.params
    applied = [str(r) for r in _applied(cm, "smooth-quant")]
    # Q and K share the layer norm's output (folded into gamma, beta); both FFN layers read
    # products of nonlinear functions (a multiply is inserted)
    assert len(applied) == 3
    assert "for 2 dense layer(s) folded into the layer before" in applied[0]
    assert all("inserted per-channel multiply (nothing per-channel makes it)" in a
               for a in applied[1:])
    hn_before = np.asarray(_ln(x, p["g"], p["b"])).reshape(-1, 16)
    hn_after = np.asarray(_ln(x, q["g"], q["b"])).reshape(-1, 16)
    for w in ("wq", "wk"):
        np.testing.assert_allclose(hn_after @ q[w], hn_before @ p[w], rtol=1e-4, atol=1e-3)
        assert _int8_error(hn_after, q[w]) < 0.5 * _int8_error(hn_before, p[w])
    # insert=false: the FFN's second layer reads gelu(...): nothing per-channel to fold into
    cm = tensorsmith.compile(_block, x, params=p, passes="smooth-quant{insert=false}",
                             calibration=cal)
    missed = [str(r) for rec in cm.history for r in rec.remarks.of_kind("missed")]
    assert len(missed) == 2 and all("nothing per-channel before it" in m for m in missed)
    assert len(_applied(cm, "smooth-quant")) == 1
    np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(_block(p, x)), rtol=2e-4,
                               atol=2e-4 * float(np.abs(_block(p, x)).max()))


def test_smooth_quant_asks_for_calibration_and_names_a_bad_batch():
    rng = np.random.default_rng(5)
    p = _block_params(rng)
    x = rng.normal(size=(1, 4, 16)).astype(np.float32)
    with pytest.raises(MissingPassData, match="smooth-quant.*calibration"):
        tensorsmith.compile(_block, x, params=p, passes="smooth-quant")
    bad = x.copy()
    bad[0, 1, 2] = np.inf
    with pytest.raises(tensorsmith.errors.PassFailure, match="calibration batch 1"):
        tensorsmith.compile(_block, x, params=p, passes="smooth-quant", calibration=[(x,), (bad,)])


def _w8a8_error(x, ws):
    """float64 oracle: relative error of x @ w for every reader, x int8 per tensor (minmax),
    each w int8 per output channel (symmetric)."""
    sx = np.abs(x).max() / 127
    xq = np.clip(np.round(x / sx), -127, 127) * sx
    num = den = 0.0
    for w in ws:
        sw = np.abs(w).max(0) / 127
        wq = np.clip(np.round(w / sw), -127, 127) * sw
        num += np.sum((xq @ wq - x @ w) ** 2)
        den += np.sum((x @ w) ** 2)
    return np.sqrt(num / den)


def test_search_alpha_is_the_grid_point_with_the_least_w8a8_error():
    from tensorsmith.passes.equalize import ALPHAS, search_alpha
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 16)) * np.exp(rng.normal(size=16) * 1.5)  # outlier channels
    ws = [rng.normal(size=(16, 8)) * np.exp(rng.normal(size=(16, 1))) for _ in range(2)]
    xmax, wmax = np.abs(x).max(0), np.max([np.abs(w).max(1) for w in ws], axis=0)
    errs = []
    for a in ALPHAS:
        s = xmax ** a / wmax ** (1 - a)
        errs.append(_w8a8_error(x / s, [w * s[:, None] for w in ws]))
    a, err = search_alpha(x, xmax, wmax, [(w, 0) for w in ws], 0.5)
    assert a == pytest.approx(ALPHAS[int(np.argmin(errs))]) and err == pytest.approx(
        min(errs), rel=1e-9)
    assert min(errs) < _w8a8_error(x, ws)  # smoothing pays on outlier channels
    assert set(ALPHAS) >= {0.0, 0.5, 1.0} and len(ALPHAS) == 21


def test_smooth_quant_search_picks_alpha_per_input_and_never_loses_to_the_fixed_one():
    rng = np.random.default_rng(4)
    p = _block_params(rng)
    x = rng.normal(size=(3, 9, 16)).astype(np.float32)
    cal = [(rng.normal(size=(3, 9, 16)).astype(np.float32),) for _ in range(4)]
    errs = {}
    for search in ("true", "false"):
        cm = tensorsmith.compile(_block, x, params=p, calibration=cal,
                                 passes=f"smooth-quant{{alpha=0.5,search={search},check=false}}")
        np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(_block(p, x)), rtol=2e-4,
                                   atol=2e-4 * float(np.abs(_block(p, x)).max()))
        applied = [r for r in _applied(cm, "smooth-quant")]
        alphas = [float(str(r).split("(alpha ")[1].split(";")[0]) for r in applied]
        if search == "false":
            assert alphas == [0.5] * 3
        q = cm.graph.params
        hn = np.concatenate([np.asarray(_ln(c[0], q["g"], q["b"])).reshape(-1, 16)
                             for c in cal]).astype(np.float64)
        errs[search] = _w8a8_error(hn, [q["wq"].astype(np.float64),
                                        q["wk"].astype(np.float64)])
    assert errs["true"] <= errs["false"] * (1 + 1e-6)


def _w4_error(x, ws, g):
    """float64 oracle: relative error of x @ w, each w int4 per column and group of g rows."""
    num = den = 0.0
    for w in ws:
        wq = np.empty_like(w)
        for i in range(0, w.shape[0], g):
            s = np.abs(w[i:i + g]).max(0) / 7
            wq[i:i + g] = np.clip(np.round(w[i:i + g] / s), -8, 7) * s
        num += np.sum((x @ wq - x @ w) ** 2)
        den += np.sum((x @ w) ** 2)
    return np.sqrt(num / den)


def test_weight_only_search_is_awq_and_lowers_the_int4_error():
    from tensorsmith.passes.equalize import ALPHAS, search_alpha
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 32)) * np.exp(rng.normal(size=32) * 1.5)  # salient channels
    ws = [rng.normal(size=(32, 8)) for _ in range(2)]
    xmean = np.abs(x).mean(0)
    errs = []
    for a in ALPHAS:
        s = np.maximum(xmean, 1e-4) ** a
        s = s / np.sqrt(s.max() * s.min())
        errs.append(_w4_error(x / s, [w * s[:, None] for w in ws], 8))
    a, err = search_alpha(x, np.abs(x).max(0), None, [(w, 0) for w in ws], 0.5,
                          weight_only=(4, 8))
    assert a == pytest.approx(ALPHAS[int(np.argmin(errs))]) and err == pytest.approx(
        min(errs), rel=1e-9)
    assert min(errs) < 0.9 * _w4_error(x, ws, 8)


def test_smooth_quant_weight_only_mode_keeps_outputs_and_names_its_error():
    rng = np.random.default_rng(4)
    p = _block_params(rng)
    x = rng.normal(size=(3, 9, 16)).astype(np.float32)
    cal = [(rng.normal(size=(3, 9, 16)).astype(np.float32),) for _ in range(4)]
    cm = tensorsmith.compile(_block, x, params=p, calibration=cal,
                             passes="smooth-quant{mode=weight_only,bits=4,group_size=8}")
    np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(_block(p, x)), rtol=2e-4,
                               atol=2e-4 * float(np.abs(_block(p, x)).max()))
    q = cm.graph.params
    hn0 = np.concatenate([np.asarray(_ln(c[0], p["g"], p["b"])).reshape(-1, 16)
                          for c in cal]).astype(np.float64)
    hn1 = np.concatenate([np.asarray(_ln(c[0], q["g"], q["b"])).reshape(-1, 16)
                          for c in cal]).astype(np.float64)
    w0 = [p[k].astype(np.float64) for k in ("wq", "wk")]
    w1 = [q[k].astype(np.float64) for k in ("wq", "wk")]
    assert _w4_error(hn1, w1, 8) < 0.98 * _w4_error(hn0, w0, 8)
    remarks = [str(r) for rec in cm.history for r in rec.remarks]
    assert all("int4 weight-only error" in r for r in remarks if "did not smooth" in r)
    with pytest.raises(tensorsmith.errors.PassFailure, match="did you mean 'weight_only'"):
        tensorsmith.compile(_block, x, params=p, calibration=cal,
                            passes="smooth-quant{mode=weight-only}")
