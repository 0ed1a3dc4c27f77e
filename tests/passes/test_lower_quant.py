"""lower-quant: the lowered program against its fake-quant twin and an integer numpy oracle;
weights really stored low (dtype, bytes); a `missed` remark where a pair stays fake-quant."""
from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import pytest

import tensorsmith
from tensorsmith import codegen
from tensorsmith.ir import GraphBuilder, TensorType
from tensorsmith.ir.stats import graph_stats
from tensorsmith.passes import PassContext, run_pipeline

RNG = np.random.default_rng(0)
_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i4": (-8, 7)}
_NP = {"i8": np.int8, "u8": np.uint8, "i4": ml_dtypes.int4}


def _lower(g, passes="lower-quant"):
    ctx = PassContext(executor=codegen.executor)
    out, _ = run_pipeline(g, passes, ctx)
    return out, ctx.remarks


def _run(g, *xs):
    return codegen.executor(g, jit=True)(*xs)[0]


def _weight_qparams(w, dtype, axis, affine, block=0):
    """Scale and zero point per output channel (``axis``) or per group of ``block`` along 0."""
    lo, hi = _RANGE[dtype]
    if block:
        g = w.reshape(w.shape[0] // block, block, *w.shape[1:])
        mn, mx = g.min(1), g.max(1)
    elif axis is None:
        mn, mx = w.min(), w.max()
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        mn, mx = w.min(other), w.max(other)
    if affine:
        s = (mx - mn) / (hi - lo)
        z = np.round(lo - mn / s)
        return np.asarray(s, np.float32), np.asarray(np.clip(z, lo, hi), _NP[dtype])
    return np.asarray(np.maximum(np.abs(mn), np.abs(mx)) / hi, np.float32), None


def _fq(b, v, scale, zp, dtype, axis=0, block=0):
    args = [b.param(scale)] + ([b.param(zp)] if zp is not None else [])
    q = b.op("quantize", v, *args, dtype=dtype, axis=axis, block_size=block)
    return b.op("dequantize", q, *args, axis=axis, block_size=block)


def _np_quant(x, s, z, dtype):
    """float32 quantize: x / s, round half to even, + zero point, clip (the ONNX definition)."""
    lo, hi = _RANGE[dtype]
    z = np.float32(0) if z is None else np.asarray(z, np.float32)
    return np.clip(np.round(np.float32(x) / np.float32(s)) + z, lo, hi).astype(np.int64)


# --- W8A8 dense ---------------------------------------------------------------------------
def _dense(act, zx, wdtype="i8", per_channel=True, affine_w=False, w_on_left=False,
           B=6, K=48, N=20):
    x_t = (B, K)
    W = RNG.standard_normal((K, N)).astype(np.float32)
    if w_on_left:
        W = np.ascontiguousarray(W.T)  # [N, K]: y = W @ x^T
    w_axis = 0 if w_on_left else 1
    sw, zw = _weight_qparams(W, wdtype, w_axis if per_channel else None, affine_w)
    sx = np.float32(0.03)
    zxa = np.asarray(zx, _NP[act]) if zx is not None else None
    b = GraphBuilder("dense")
    x = b.input(TensorType(x_t, "f32"), "x")
    dx = _fq(b, x, sx, zxa, act)
    dw = _fq(b, b.param(W, "w"), sw, zw, wdtype, axis=w_axis)
    if w_on_left:
        y = b.op("dot_general", dw, dx, contracting_dims=((1,), (1,)))
    else:
        y = b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))
    y = b.op("add", y, b.param(RNG.standard_normal(y.type.shape[-1:]).astype(np.float32), "b"))
    g = b.build([y])
    qw = _np_quant(W, sw if sw.ndim == 0 else sw.reshape((-1, 1) if w_on_left else (1, -1)),
                   None if zw is None else zw.reshape((-1, 1) if w_on_left else (1, -1)), wdtype)
    return g, W, (sx, zx, act), (sw, zw, qw, wdtype)


@pytest.mark.parametrize("act,zx,wdtype,per_channel,affine_w,left", [
    ("i8", None, "i8", True, False, False),    # symmetric, per channel
    ("i8", None, "i8", False, False, False),   # per tensor
    ("u8", 97, "i8", True, False, False),      # affine activations (u8)
    ("i8", -7, "i8", True, True, False),       # affine both (weight zero point per channel)
    ("u8", 3, "u8", False, True, False),       # u8 x u8, per tensor
    ("i8", 5, "i4", True, False, False),       # int4 weights, widened for the dot
    ("i8", 4, "i8", True, False, True),        # weight on the left: W @ x^T
])
def test_w8a8_dense_is_integer_exact_and_within_one_step(act, zx, wdtype, per_channel,
                                                         affine_w, left):
    g, W, (sx, zx_, _), (sw, zw, qw, _) = _dense(act, zx, wdtype, per_channel, affine_w, left)
    W_before = W.copy()
    low, remarks = _lower(g)
    text = low.to_text()
    assert 'preferred_element_type="i32"' in text, text
    assert "dequantize" not in text, text
    assert [r.kind for r in remarks] == ["applied"], str(remarks)
    assert "W8A8" in remarks[0].message
    x = (RNG.standard_normal((6, 48)) * 1.5).astype(np.float32)
    got, fake = _run(low, x), _run(g, x)
    # integer oracle: exact sum of (qx - zx)(qw - zw) in int64, then one f32 multiply
    qx = _np_quant(x, sx, zx_, act) - (zx_ or 0)
    qwz = qw - (0 if zw is None else zw.astype(np.int64).reshape((-1, 1) if left else (1, -1)))
    acc = (qwz @ qx.T) if left else (qx @ qwz)
    comb = (np.float32(sx) * np.asarray(sw, np.float32)).astype(np.float32)
    comb = comb.reshape(-1, 1) if left and comb.ndim else comb
    bias = low.params["b"]
    # the integer part is exact: it is recovered from the output (float error << one unit)
    np.testing.assert_array_equal(np.round((got - bias) / comb).astype(np.int64), acc)
    np.testing.assert_allclose(got, acc.astype(np.float32) * comb + bias, rtol=1e-6, atol=1e-6)
    # and the fake-quant twin agrees within one output quantization step per element
    step = np.broadcast_to(comb, got.shape)
    assert np.all(np.abs(got - fake) <= step), np.abs(got - fake).max()
    np.testing.assert_array_equal(W, W_before)  # the user's weight is untouched


def test_w8a8_stores_int8_weights_and_bytes_drop():
    g, W, _, _ = _dense("i8", None, B=4, K=256, N=128)
    low, _ = _lower(g)
    wq = [a for k, a in low.params.items() if k.startswith("w/")]
    assert {a.dtype for a in wq} >= {np.dtype(np.int8)}
    assert "w" not in low.params  # the float weight is gone
    before, after = graph_stats(g).param_bytes, graph_stats(low).param_bytes
    # i8 weights plus a per-channel f32 requantize scale: about a quarter of the float bytes
    assert after <= 0.27 * before, (before, after)


# --- W8A8 conv ----------------------------------------------------------------------------
def _conv(zx, layout="NHWC", groups=1, padding=((1, 1), (1, 1)), strides=(1, 1), C=8, O=8):
    lspec, rspec = (layout, "HWIO") if layout == "NHWC" else (layout, "OIHW")
    x_shape = (2, 7, 9, C) if layout == "NHWC" else (2, C, 7, 9)
    w_hwio = RNG.standard_normal((3, 3, C // groups, O)).astype(np.float32)
    W = w_hwio if rspec == "HWIO" else np.ascontiguousarray(w_hwio.transpose(3, 2, 0, 1))
    o_axis = rspec.index("O")
    sw, _ = _weight_qparams(W, "i8", o_axis, False)
    sx = np.float32(0.05)
    b = GraphBuilder("conv")
    x = b.input(TensorType(x_shape, "f32"), "x")
    dx = _fq(b, x, sx, None if zx is None else np.asarray(zx, np.int8), "i8")
    dw = _fq(b, b.param(W, "w"), sw, None, "i8", axis=o_axis)
    dn = (lspec, rspec, lspec)
    y = b.op("conv", dx, dw, dimension_numbers=dn, window_strides=strides, padding=padding,
             feature_group_count=groups)
    g = b.build([y])
    qw = _np_quant(W, sw.reshape([-1 if i == o_axis else 1 for i in range(4)]), None, "i8")
    return g, (sx, zx), (sw, qw), dn, x_shape


@pytest.mark.parametrize("zx,layout,groups,padding,strides", [
    (None, "NHWC", 1, ((1, 1), (1, 1)), (1, 1)),
    (-20, "NHWC", 1, ((1, 1), (1, 1)), (1, 1)),     # affine input, padded: explicit pad by z_x
    (11, "NCHW", 1, ((2, 0), (1, 2)), (2, 1)),      # NCHW, asymmetric padding, strides
    (-3, "NHWC", 8, ((1, 1), (1, 1)), (1, 1)),      # depthwise
])
def test_w8a8_conv_is_integer_exact(zx, layout, groups, padding, strides):
    g, (sx, zx_), (sw, qw), dn, x_shape = _conv(zx, layout, groups, padding, strides)
    low, remarks = _lower(g)
    assert [r.kind for r in remarks] == ["applied"], str(remarks)
    assert ("= pad(" in low.to_text()) == bool(zx), low.to_text()
    x = (RNG.standard_normal(x_shape) * 3).astype(np.float32)
    got, fake = _run(low, x), _run(g, x)
    qx = (_np_quant(x, sx, zx_, "i8") - (zx_ or 0)).astype(np.float32)
    # integers below 2**24 are exact in f32: the float conv of the integers is the oracle
    acc = np.asarray(jax.lax.conv_general_dilated(
        qx, qw.astype(np.float32), strides, padding, dimension_numbers=dn,
        feature_group_count=groups, precision="highest"))
    c_axis = dn[2].index("C")
    comb = (np.float32(sx) * sw).astype(np.float32).reshape(
        [-1 if i == c_axis else 1 for i in range(4)])
    np.testing.assert_array_equal(got, acc * comb)
    assert np.all(np.abs(got - fake) <= np.broadcast_to(comb, got.shape))


# --- weight-only ------------------------------------------------------------------------
def _weight_only(dtype, block, affine=False, K=64, N=24):
    if block and K % block:
        raise ValueError("test weights split into whole groups")
    W = RNG.standard_normal((K, N)).astype(np.float32)
    sw, zw = _weight_qparams(W, dtype, 1, affine, block)
    b = GraphBuilder("wo")
    x = b.input(TensorType((3, K), "f32"), "x")
    dw = _fq(b, b.param(W, "w"), sw, zw, dtype, axis=0 if block else 1, block=block)
    y = b.op("dot_general", x, dw, contracting_dims=((1,), (0,)))
    return b.build([y]), W


@pytest.mark.parametrize("dtype,block,affine,K", [("i8", 0, False, 64), ("i8", 0, True, 64),
                                                  ("i4", 16, False, 64), ("i4", 32, True, 64),
                                                  ("i4", 0, False, 63)])
def test_weight_only_stores_low_and_matches_fake_quant(dtype, block, affine, K):
    g, W = _weight_only(dtype, block, affine, K=K)
    low, remarks = _lower(g)
    if dtype == "i8":
        assert low.params["w/q"].dtype == np.int8
    else:  # two 4-bit values per byte
        packed = low.params["w/q4"]
        assert packed.dtype == np.uint8 and packed.shape == ((K + 1) // 2, 24)
        assert "packed two per byte" in remarks[0].message
    assert "w" not in low.params and " quantize(@" not in low.to_text()
    assert [r.kind for r in remarks] == ["applied"] and "weight-only" in remarks[0].message
    x = RNG.standard_normal((3, K)).astype(np.float32)
    want = _run(g, x)
    np.testing.assert_allclose(_run(low, x), want, rtol=1e-6, atol=1e-6)
    # and through a compiled model (params passed to an AOT-compiled XLA executable)
    (out,) = tensorsmith.compile(low, passes="none")(x)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-6)
    bits = 8 if dtype == "i8" else 4
    assert graph_stats(low).param_bytes < graph_stats(g).param_bytes * (bits / 32 + 0.1)
    assert sum(a.nbytes for a in low.params.values()) < \
        sum(a.nbytes for a in g.params.values()) * (bits / 32 + 0.1)


def test_packed_int4_survives_later_passes_and_the_text_round_trip():
    g, _ = _weight_only("i4", 16)
    low, _ = _lower(g, "lower-quant,default")  # fold-constants must not unpack it into i8
    assert low.params["w/q4"].dtype == np.uint8 and len(low.params) == 2, dict(low.params)
    text = low.to_text()
    assert 'annotate @w/q4 packed {axis=0, bits=4, length=64, signed=true}' in text, text
    from tensorsmith.ir.parser import parse
    assert parse(text, params=dict(low.params)).to_text() == text
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(low, x), _run(g, x), rtol=1e-6, atol=1e-6)


def test_group_wise_weights_with_quantized_activations_fall_back_to_weight_only():
    K, N = 64, 16
    W = RNG.standard_normal((K, N)).astype(np.float32)
    sw, _ = _weight_qparams(W, "i4", 1, False, 16)
    b = GraphBuilder("g")
    x = b.input(TensorType((2, K), "f32"), "x")
    dx = _fq(b, x, np.float32(0.02), None, "i8")
    dw = _fq(b, b.param(W, "w"), sw, None, "i4", axis=0, block=16)
    g = b.build([b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))])
    low, remarks = _lower(g)
    assert low.params["w/q4"].dtype == np.uint8
    missed = [r.message for r in remarks if r.kind == "missed"]
    assert any("weight scale varies along the reduction (group size 16)" in m for m in missed), missed
    strict, remarks = _lower(g, "lower-quant{mode=w8a8}")
    assert strict.to_text() == g.to_text()  # nothing lowered, the pair stays fake-quant
    assert remarks.of_kind("missed")


def test_modes_and_missed_remarks():
    g, *_ = _dense("i8", None)
    wo, remarks = _lower(g, "lower-quant{mode=weight_only}")
    text = wo.to_text()
    assert 'preferred_element_type="i32"' not in text and "quantize(%x" in text
    assert wo.params["w/q"].dtype == np.int8
    # an activation quantized per axis cannot run through the integer dot
    W = RNG.standard_normal((8, 4)).astype(np.float32)
    b = GraphBuilder("pa")
    x = b.input(TensorType((8, 8), "f32"), "x")
    dx = _fq(b, x, np.full(8, 0.1, np.float32), None, "i8", axis=1)
    dw = _fq(b, b.param(W, "w"), *_weight_qparams(W, "i8", 1, False), "i8", axis=1)
    g2 = b.build([b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))])
    _, remarks = _lower(g2)
    assert any("quantized per axis" in r.message for r in remarks.of_kind("missed")), remarks
    # w8a8 mode says why an unquantized activation keeps the dot in float
    b = GraphBuilder("nq")
    x = b.input(TensorType((2, 8), "f32"), "x")
    dw = _fq(b, b.param(W, "w"), *_weight_qparams(W, "i8", 1, False), "i8", axis=1)
    g3 = b.build([b.op("dot_general", x, dw, contracting_dims=((1,), (0,)))])
    out, remarks = _lower(g3, "lower-quant{mode=w8a8}")
    assert out.to_text() == g3.to_text()
    assert any("is not fake-quantized" in r.message for r in remarks.of_kind("missed"))


def test_fp8_dot_matches_fake_quant():
    K, N = 32, 16
    W = RNG.standard_normal((K, N)).astype(np.float32)
    fmax = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
    sw = (np.abs(W).max(0) / fmax).astype(np.float32)
    b = GraphBuilder("f8")
    x = b.input(TensorType((4, K), "f32"), "x")
    dx = _fq(b, x, np.float32(4.0 / fmax), None, "f8e4m3fn")
    dw = _fq(b, b.param(W, "w"), sw, None, "f8e4m3fn", axis=1)
    g = b.build([b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))])
    low, remarks = _lower(g)
    assert low.params["w/q"].dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert 'preferred_element_type="f32"' in low.to_text()
    assert remarks[0].kind == "applied" and "fp8" in remarks[0].message
    xv = RNG.standard_normal((4, K)).astype(np.float32)
    got, fake = _run(low, xv), _run(g, xv)
    np.testing.assert_allclose(got, fake, rtol=1e-5, atol=1e-5 * np.abs(fake).max())


@pytest.mark.parametrize("scheme", ["symmetric", "affine"])
def test_dynamic_activation_scale_runs_w8a8(scheme):
    """quantize{activations=dynamic}: the scale is computed per call; the int8 dot multiplies
    its i32 result by it."""
    W = RNG.standard_normal((64, 16)).astype(np.float32)
    b = GraphBuilder("dyn")
    x = b.input(TensorType((4, 64), "f32"), "x")
    g = b.build([b.op("dot_general", x, b.param(W, "w"), contracting_dims=((1,), (0,)))])
    calib = [(RNG.standard_normal((4, 64)).astype(np.float32),)]
    ctx = PassContext(executor=codegen.executor, calibration=calib)
    fake, _ = run_pipeline(g, f"quantize{{activations=dynamic, scheme={scheme}}}", ctx)
    low, remarks = _lower(fake)
    assert [r.kind for r in remarks] == ["applied"], str(remarks)
    assert "scale computed per call (dynamic)" in remarks[0].message
    assert 'preferred_element_type="i32"' in low.to_text()
    xv = (RNG.standard_normal((4, 64)) * 2).astype(np.float32)
    got, want = _run(low, xv), _run(fake, xv)
    step = np.abs(xv).max() / 127 * low.params["w/requant_scale"]  # s_x * s_w per channel
    assert np.all(np.abs(got - want) <= step), np.abs(got - want).max()


def test_min_speedup_keeps_fake_quant_when_the_lowering_is_slower():
    g, *_ = _dense("i8", None)
    out, remarks = _lower(g, "lower-quant{min_speedup=1000, repeats=3}")
    assert out.to_text() == g.to_text()
    kept = [r for r in remarks if r.kind == "missed" and "kept fake-quant" in r.message]
    assert kept and dict(kept[0].data)["speedup"] < 1000
    assert not remarks.of_kind("applied")  # nothing was lowered, nothing is claimed
    out, remarks = _lower(g, "lower-quant{min_speedup=0.001, repeats=3}")
    assert 'preferred_element_type="i32"' in out.to_text()
    assert any("measured" in r.message for r in remarks.of_kind("note"))
    assert len(remarks.of_kind("applied")) == 1


# --- the bundled digits CNN ---------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", ["default,quantize", "default,fuse,quantize"])
def test_digits_cnn_lowered_int8_agrees_with_fake_quant(pipeline):
    ex = tensorsmith.examples.load("digits-cnn")
    x, y = ex.eval_data
    calib = [(x[i:i + 32],) for i in range(0, 128, 32)]
    kw = dict(params=ex.params, calibration=calib, batch_dim=True)
    fake = tensorsmith.compile(ex.fn, x, passes=pipeline, **kw)
    low = tensorsmith.compile(ex.fn, x, passes=pipeline + ",lower-quant", **kw)
    applied = [r for rec in low.history for r in rec.remarks
               if r.pass_name == "lower-quant" and r.kind == "applied"]
    assert len(applied) == 4 and all("W8A8" in r.message for r in applied), applied
    assert low.ir().count('preferred_element_type="i32"') == 4
    assert "dequantize(@" not in low.ir()  # no weight is dequantized at run time
    a, b = np.asarray(fake(x)), np.asarray(low(x))
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.995
    # weights really int8: the conv/dense kernels take a quarter of their float bytes
    kernels = lambda g: sum(TensorType.of(v).nbytes() for k, v in g.params.items()  # noqa: E731
                            if "kernel" in k and not k.endswith(("scale", "correction")))
    assert kernels(low.graph) <= 0.27 * kernels(fake.source)
    stored = [k for k in low.graph.params if k.endswith("kernel/q")]
    assert len(stored) == 4 and {low.graph.params[k].dtype for k in stored} == {np.dtype(np.int8)}
    # the quantize pass's record of each weight's parameters follows it to the stored weight
    for k in stored:
        note = low.graph.annotation(k, "quant")
        assert note is not None and note.attrs["dtype"] == "i8", k
