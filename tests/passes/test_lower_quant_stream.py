"""lower-quant, streamed weight-only dots: the scan over chunks of the weight against the
fake-quant twin and a float64 numpy oracle of the dequantized weight; where it applies and
where it does not; the int4 layout (halves of each chunk) through later passes and text."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tensorsmith
from tensorsmith import codegen
from tensorsmith.ir import GraphBuilder, TensorType
from tensorsmith.passes import PassContext, run_pipeline
from tensorsmith.passes.quant_stream import pack_halves

RNG = np.random.default_rng(7)
_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i4": (-8, 7), "u4": (0, 15)}
_NP = {"i8": np.int8, "u8": np.uint8, "i4": ml_dtypes.int4, "u4": ml_dtypes.uint4}
# small weights stream too, in chunks of a few rows
FORCE = "lower-quant{stream_min_bytes=0, chunk_bytes=%d}"


def _lower(g, passes):
    ctx = PassContext(executor=codegen.executor)
    out, _ = run_pipeline(g, passes, ctx)
    return out, ctx.remarks


def _run(g, *xs):
    return np.asarray(codegen.executor(g, jit=True)(*xs)[0])


def _qparams(w, dtype, k_axis, block, affine):
    """Scale (and zero point) per output channel, or per group of ``block`` along ``k_axis``."""
    lo, hi = _RANGE[dtype]
    if block > 0:
        k = w.shape[k_axis]
        pad = -k % block
        wk = np.moveaxis(w, k_axis, 0)
        wk = np.concatenate([wk, np.repeat(wk[-1:], pad, 0)]) if pad else wk
        g = wk.reshape(-1, block, wk.shape[1])
        mn, mx = g.min(1), g.max(1)
        if k_axis == 1:
            mn, mx = mn.T, mx.T
    elif block < 0:  # per tensor
        mn, mx = np.float32(w.min()), np.float32(w.max())
    else:
        mn, mx = w.min(k_axis), w.max(k_axis)
    if affine:
        s = ((mx - mn) / (hi - lo)).astype(np.float32)
        z = np.clip(np.round(lo - mn / s), lo, hi)
        return np.asarray(s), np.asarray(z.astype(_NP[dtype]))
    return np.asarray(np.maximum(np.abs(mn), np.abs(mx)) / hi, np.float32), None


def _np_dequant(w, s, z, dtype, k_axis, block):
    """The oracle: quantize (round half to even, clip) and dequantize in float64 numpy."""
    lo, hi = _RANGE[dtype]
    out_axis = 1 - k_axis
    if block:
        rep = lambda a: np.repeat(np.asarray(a, np.float64), block, axis=k_axis)[
            tuple(slice(0, w.shape[k_axis]) if i == k_axis else slice(None) for i in range(2))]
        s64, z64 = rep(s), (0.0 if z is None else rep(z))
    else:
        shape = [1, 1]
        shape[out_axis] = -1 if np.size(s) > 1 else 1
        s64 = np.asarray(s, np.float64).reshape(shape)
        z64 = 0.0 if z is None else np.asarray(z, np.float64).reshape(shape)
    q = np.clip(np.round(np.float32(w) / np.float32(s64)) + z64, lo, hi)
    return (q - z64) * s64


def _graph(dtype, block, affine, K, N, x_shape, k_axis=0):
    W = RNG.standard_normal((K, N) if k_axis == 0 else (N, K)).astype(np.float32)
    s, z = _qparams(W, dtype, k_axis, block, affine)
    block = max(block, 0)
    b = GraphBuilder("wo")
    x = b.input(TensorType(x_shape, "f32"), "x")
    args = [b.param(s)] + ([b.param(z)] if z is not None else [])
    axis = k_axis if block else 1 - k_axis
    q = b.op("quantize", b.param(W, "w"), *args, dtype=dtype, axis=axis, block_size=block)
    dw = b.op("dequantize", q, *args, axis=axis, block_size=block)
    y = b.op("dot_general", x, dw, contracting_dims=((len(x_shape) - 1,), (k_axis,)))
    g = b.build([b.op("relu", y)])
    return g, _np_dequant(W, s, z, dtype, k_axis, block)


@pytest.mark.parametrize("dtype,block,affine,K,k_axis,x_shape", [
    ("i8", 0, False, 64, 0, (1, 64)),       # per channel, symmetric
    ("i8", -1, True, 40, 0, (2, 40)),       # per tensor, affine
    ("i8", 0, True, 63, 0, (3, 63)),        # affine, odd K (x padded with zeros)
    ("u8", 0, True, 50, 1, (2, 50)),        # u8, weight [N, K] (transposed when stored)
    ("i8", 16, False, 64, 0, (2, 2, 64)),   # groups along K, x of rank 3
    ("i4", 0, False, 64, 0, (1, 64)),       # int4 packed by halves
    ("i4", 16, True, 77, 0, (3, 77)),       # int4 groups, affine, odd K (last group partial)
    ("u4", 8, True, 48, 1, (1, 48)),        # u4, groups, weight [N, K]
    ("i4", 0, False, 33, 1, (4, 33)),       # int4 per channel, odd K, weight [N, K]
])
def test_streamed_dot_matches_fake_quant_and_float64_oracle(dtype, block, affine, K, k_axis,
                                                            x_shape):
    N = 24
    g, dq64 = _graph(dtype, block, affine, K, N, x_shape, k_axis)
    block = max(block, 0)
    low, remarks = _lower(g, FORCE % (16 * 4 * N))  # 16 rows of float per step
    applied = remarks.of_kind("applied")
    assert len(applied) == 1 and "streamed through the dot_general" in applied[0].message
    data = dict(applied[0].data)
    assert data["stream_steps"] >= 2 and data["stream_rows"] % max(block, 1) == 0
    text = low.to_text()
    assert "scan(" in text and " quantize(" not in text and "w" not in low.params
    stored = low.params["w/q4" if dtype in ("i4", "u4") else "w/q"]
    rows, steps = data["stream_rows"], data["stream_steps"]
    if dtype in ("i4", "u4"):  # two values per byte, the padded K included
        assert stored.dtype == np.uint8 and stored.shape == (steps * rows // 2, N)
        assert f"halves={rows}" in text
    else:
        assert stored.dtype == np.dtype(_NP[dtype]) and stored.shape == (steps * rows, N)
    x = RNG.standard_normal(x_shape).astype(np.float32)
    got, twin = _run(low, x), _run(g, x)
    x2 = x.reshape(-1, K).astype(np.float64)
    w_kn = dq64 if k_axis == 0 else dq64.T
    oracle = np.maximum(x2 @ w_kn, 0).reshape(got.shape)
    bound = 1e-5 * (np.abs(x2) @ np.abs(w_kn)).reshape(got.shape) + 1e-6
    assert np.all(np.abs(got - oracle) <= bound), np.abs(got - oracle).max()
    assert np.all(np.abs(got - twin) <= bound), np.abs(got - twin).max()
    # and through a compiled model (params handed to an AOT-compiled executable)
    (out,) = tensorsmith.compile(low, passes="none")(x)
    np.testing.assert_allclose(np.asarray(out), got, rtol=1e-6, atol=1e-6)


def test_pack_halves_layout():
    q = RNG.integers(-8, 8, size=(12, 5)).astype(np.int8)
    p = pack_halves(q, 6)
    assert p.dtype == np.uint8 and p.shape == (6, 5)
    lo = (p.astype(np.int16) & 0xF)
    hi = p.astype(np.int16) >> 4
    signed = lambda v: np.where(v > 7, v - 16, v)
    for c in range(2):  # chunk c: its byte j holds rows 6c + j and 6c + 3 + j
        np.testing.assert_array_equal(signed(lo[3 * c:3 * c + 3]), q[6 * c:6 * c + 3])
        np.testing.assert_array_equal(signed(hi[3 * c:3 * c + 3]), q[6 * c + 3:6 * c + 6])


def test_thresholds_decide_between_streamed_and_whole_weight():
    g, _ = _graph("i8", 0, False, 64, 24, (8, 64))
    # more rows of activations than stream_rows: the whole-weight form (dequantize, one dot)
    low, remarks = _lower(g, "lower-quant{stream_min_bytes=0, chunk_bytes=384, stream_rows=4}")
    assert "scan(" not in low.to_text() and "dequantized in the dot_general" in remarks[0].message
    # a weight whose float copy is under stream_min_bytes (the default 16 MiB) is not streamed
    low, _ = _lower(g, "lower-quant{chunk_bytes=384}")
    assert "scan(" not in low.to_text()
    # stream_rows=0 never streams
    low, _ = _lower(g, "lower-quant{stream_min_bytes=0, chunk_bytes=384, stream_rows=0}")
    assert "scan(" not in low.to_text()
    low, _ = _lower(g, "lower-quant{stream_min_bytes=0, chunk_bytes=384, stream_rows=8}")
    assert "scan(" in low.to_text()


def test_defaults_stream_a_16_mib_weight_at_batch_1():
    K, N = 2048, 2048  # 16 MiB of float: the default stream_min_bytes
    g, dq64 = _graph("i8", 0, False, K, N, (1, K))
    low, remarks = _lower(g, "lower-quant")
    data = dict(remarks.of_kind("applied")[0].data)
    assert data["stream_rows"] * N * 4 == 4 << 20 and data["stream_steps"] == 4  # 4 MiB chunks
    x = RNG.standard_normal((1, K)).astype(np.float32)
    got = _run(low, x)
    bound = 1e-5 * (np.abs(x) @ np.abs(dq64)) + 1e-6
    assert np.all(np.abs(got - np.maximum(x @ dq64, 0)) <= bound)
    # XLA's program converts one 512-row chunk at a time; the whole-weight form a full copy
    hlo = tensorsmith.compile(low, passes="none").hlo(x)
    assert "f32[2048,2048]" not in hlo and "f32[512,2048]" in hlo
    whole, _ = _lower(g, "lower-quant{stream_rows=0}")
    assert "f32[2048,2048]" in tensorsmith.compile(whole, passes="none").hlo(x)
    # half the columns: 8 MiB of float, under the default, dequantized whole
    g, _ = _graph("i8", 0, False, K, N // 2, (1, K))
    low, remarks = _lower(g, "lower-quant")
    assert "scan(" not in low.to_text() and "stream_steps" not in dict(remarks[0].data)


def test_quantized_activations_keep_w8a8_and_shared_weights_are_stored_once():
    K, N = 64, 16
    W = RNG.standard_normal((K, N)).astype(np.float32)
    s, _ = _qparams(W, "i8", 0, 0, False)
    b = GraphBuilder("g")
    x = b.input(TensorType((1, K), "f32"), "x")
    sx = b.param(np.float32(0.05))
    dx = b.op("dequantize", b.op("quantize", x, sx, dtype="i8", axis=0, block_size=0), sx,
              axis=0, block_size=0)
    sw = b.param(s)
    dw = b.op("dequantize", b.op("quantize", b.param(W, "w"), sw, dtype="i8", axis=1,
                                 block_size=0), sw, axis=1, block_size=0)
    g = b.build([b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))])
    opts = "stream_min_bytes=0, chunk_bytes=256"
    low, _ = _lower(g, f"lower-quant{{{opts}}}")
    assert 'preferred_element_type="i32"' in low.to_text() and "scan(" not in low.to_text()
    low, _ = _lower(g, f"lower-quant{{mode=weight_only, {opts}}}")  # float x: streamed
    assert "scan(" in low.to_text()
    xv = RNG.standard_normal((1, K)).astype(np.float32)
    np.testing.assert_allclose(_run(low, xv), _run(g, xv), rtol=1e-5, atol=1e-5)
    # one dequantized weight read by two dots: stored once, whole
    b = GraphBuilder("shared")
    x = b.input(TensorType((1, K), "f32"), "x")
    sw = b.param(s)
    dw = b.op("dequantize", b.op("quantize", b.param(W, "w"), sw, dtype="i8", axis=1,
                                 block_size=0), sw, axis=1, block_size=0)
    y1 = b.op("dot_general", x, dw, contracting_dims=((1,), (0,)))
    y2 = b.op("dot_general", b.op("relu", x), dw, contracting_dims=((1,), (0,)))
    g2 = b.build([b.op("add", y1, y2)])
    low, _ = _lower(g2, f"lower-quant{{{opts}}}")
    assert "scan(" not in low.to_text() and low.params["w/q"].dtype == np.int8


def test_streamed_int4_survives_later_passes_and_the_text_round_trip():
    g, _ = _graph("i4", 16, False, 64, 24, (1, 64))
    low, _ = _lower(g, (FORCE % (32 * 4 * 24)) + ",default")
    assert low.params["w/q4"].dtype == np.uint8, dict(low.params)
    text = low.to_text()
    assert "annotate @w/q4 packed {axis=0, bits=4, halves=32, length=64, signed=true}" in text, text
    from tensorsmith.ir.parser import parse
    assert parse(text, params=dict(low.params)).to_text() == text
    x = RNG.standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(low, x), _run(g, x), rtol=1e-5, atol=1e-5)
