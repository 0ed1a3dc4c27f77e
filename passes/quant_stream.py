"""Weight-only dots that stream their low-precision weight through a loop of small chunks.

XLA:CPU compiles ``dot(x, convert(Wq) * s)`` as a fusion writing a float copy of the whole
weight, then the dot: each call writes and rereads 4 bytes per weight element, on freshly
allocated pages (a 4096x4096 layer: 64 MiB, 16384 page faults per call, measured), which at
batch 1 makes int8 about 5x slower than float. Here the dot becomes a ``scan`` over chunks of the reduction axis: each step
converts ``rows`` rows of the integer weight to float (about ``chunk_bytes``, a buffer that
stays in cache and is reused), subtracts the zero point (exact), and adds ``x[:, rows] @ chunk``
to the accumulator; the scale multiplies the [M, N] sums (per group inside the loop, per
channel after it), not the weight. The program reads the weight once, in its low dtype. The
result is the fake-quant twin's up to the rounding of the sum (its order and where the scale
is applied).

int4/uint4 weights are packed two per byte by halves of each chunk (low nibble: row ``i``,
high nibble: row ``i + rows/2``), so unpacking is two shifts and each half is its own dot; an
interleaved layout needs a shuffle that XLA:CPU runs ~7x slower.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import GraphBuilder, Node, Value
from ..ir.types import TensorType, numpy_dtype
from .quant_match import QAct, QWeight, match_activation, match_weight
from .rewrite import Rewriter

STREAM_DTYPES = ("i8", "u8", "i4", "u4")

__all__ = ["STREAM_DTYPES", "pack_halves", "stream_weight_only"]


def pack_halves(q: np.ndarray, rows: int) -> np.ndarray:
    """4-bit values ``q[K, N]`` (K a multiple of ``rows``) as u8 ``[K/2, N]``: in each run of
    ``rows`` rows, byte ``j`` holds row ``j`` (low nibble) and row ``j + rows/2`` (high)."""
    k, n = q.shape
    v = (np.asarray(q).astype(np.int16) & 0xF).reshape(k // rows, 2, rows // 2, n)
    return (v[:, 0] | (v[:, 1] << 4)).astype(np.uint8).reshape(k // 2, n)


def _plan(rw: Rewriter, node: Node, mode: str, max_rows: int, min_bytes: int):
    """(weight, x, M, q as [K, N], scale, zero point, block, weight's K axis) or None."""
    if node.op != "dot_general" or node.output.type.dtype not in ("f32", "f64"):
        return None
    (lc, rc), (lb, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims", ((), ()))
    x = node.inputs[0]
    if lb or rb or len(lc) != 1 or len(rc) != 1 or tuple(lc) != (x.type.rank - 1,):
        return None
    if node.attrs.get("preferred_element_type") not in (None, node.output.type.dtype):
        return None
    if not all(isinstance(d, int) for d in x.type.shape) or x.type.dtype != node.output.type.dtype:
        return None
    wt = match_weight(rw, node.inputs[1])
    if wt is None or wt.q.ndim != 2 or wt.qp.dtype not in STREAM_DTYPES:
        return None
    if rw.num_uses(node.inputs[1]) != 1:
        return None  # a weight read elsewhere too is stored once, by store-weight-low
    if mode != "weight_only" and isinstance(match_activation(rw, x), QAct):
        return None  # a quantized activation: W8A8 decides
    m = math.prod(x.type.shape[:-1])
    k_axis = rc[0]
    q = wt.q if k_axis == 0 else wt.q.T
    k, n = q.shape
    if m > max_rows or k * n * 4 < min_bytes:
        return None
    qp = wt.qp
    scale, zp, block = np.asarray(qp.scale), None if qp.zero_free else np.asarray(qp.zp), 0
    axis = qp.axis % 2
    if qp.block:
        if axis != k_axis:
            return None  # groups along the output axis: not a layout the loop reads per step
        block = qp.block
        scale = scale if k_axis == 0 else scale.T
        zp = None if zp is None else (zp if k_axis == 0 else zp.T)
    elif not qp.per_tensor:
        if axis == k_axis:
            return None  # one scale per reduction row: rare, left to store-weight-low
        scale = scale.reshape(-1)
        zp = None if zp is None else zp.reshape(-1)
    else:
        scale = scale.reshape(())
        zp = None if zp is None else zp.reshape(())
    return wt, x, m, np.ascontiguousarray(q), scale, zp, block, k_axis


def _rows(k: int, n: int, block: int, packed: bool, chunk_bytes: int) -> int:
    """Rows of the reduction per step: about ``chunk_bytes`` of float, a multiple of the group
    size (twice it when packed by halves: each half holds whole groups), at most K rounded up."""
    unit = max(block, 1) * (2 if packed else 1)
    rows = max(unit, (chunk_bytes // (4 * n)) // unit * unit)
    if block:  # each group is its own dot in the loop body: not too many per step
        rows = min(rows, max(unit, 8 * block))
    return min(rows, -(-k // unit) * unit)


def _pad_rows(a: np.ndarray, total: int, fill) -> np.ndarray:
    if a.shape[0] == total:
        return a
    pad = np.full((total - a.shape[0],) + a.shape[1:], fill, a.dtype)
    return np.concatenate([a, pad])


def stream_weight_only(rw: Rewriter, node: Node, mode: str = "auto", max_rows: int = 256,
                       min_bytes: int = 16 << 20, chunk_bytes: int = 4 << 20):
    """dot(x, dequantize(Wq)) -> scan over chunks of K of acc += x[:, chunk] @ (float(chunk) -
    zp), the scale applied to the sums."""
    plan = _plan(rw, node, mode, max_rows, min_bytes)
    if plan is None:
        return None
    wt, x, m, q, scale, zp, block, k_axis = plan
    k, n = q.shape
    dtype = wt.qp.dtype
    packed = dtype in ("i4", "u4")
    rows = _rows(k, n, block, packed, chunk_bytes)
    steps = -(-k // rows)
    if steps < 2:
        return None  # one chunk is the whole weight: nothing to stream
    kp = steps * rows
    loc, ft = node.loc, node.output.type.dtype
    ct = numpy_dtype(ft)
    # Padded rows meet zeros of x: any finite dequantized value adds nothing.
    q = _pad_rows(q, kp, 0)
    if packed:
        stored = rw.add_param(pack_halves(q, rows), f"{wt.stem}/q4")
        rw.annotate(stored, "packed", {"bits": 4, "axis": 0, "signed": dtype == "i4",
                                       "length": k, "halves": rows})
        w_steps = rw.op("reshape", stored, loc=loc, shape=(steps, rows // 2, n))
    else:
        stored = rw.add_param(q.astype(numpy_dtype(dtype)), f"{wt.stem}/q")
        w_steps = rw.op("reshape", stored, loc=loc, shape=(steps, rows, n))
    if k_axis == 0 and not packed:  # the quant facts still describe this array's axes
        rw.carry_annotations(wt.name, stored)
    xs = [w_steps]
    invariant = []
    groups = -(-kp // block) if block else 0
    # The scale multiplies each step's (or group's) [M, N] partial sum, not the weight: the
    # loop converts integers to float (and subtracts the zero point: exact) and nothing more.
    s_arr = np.asarray(scale, ct)
    s_param = rw.add_param(np.ascontiguousarray(_pad_rows(s_arr, groups, 1) if block else s_arr),
                           f"{wt.stem}/scale")
    z_param = None
    if zp is not None:
        z_arr = np.asarray(zp, ct)
        z_param = rw.add_param(np.ascontiguousarray(_pad_rows(z_arr, groups, 0) if block
                                                    else z_arr), f"{wt.stem}/zero_point")
    if block:
        xs.append(rw.op("reshape", s_param, loc=loc, shape=(steps, rows // block, n)))
        if z_param is not None:
            xs.append(rw.op("reshape", z_param, loc=loc, shape=(steps, rows // block, n)))
    elif z_param is not None:
        invariant = [z_param]
    # x [..., K] -> [M, Kp] -> [steps, M, rows]
    xm = x if x.type.rank == 2 else rw.op("reshape", x, loc=loc, shape=(m, k))
    if kp != k:  # the padded rows read zeros, whatever the weight holds there
        zero = rw.op("constant", loc=loc, value=0.0, shape=(), dtype=ft)
        xm = rw.op("pad", xm, zero, loc=loc, low=(0, 0), high=(0, kp - k))
    x_steps = rw.op("transpose", rw.op("reshape", xm, loc=loc, shape=(m, steps, rows)), loc=loc,
                    permutation=(1, 0, 2))
    body = _body(rw, m, n, rows, block, dtype, ft, [v.type for v in xs],
                 [v.type for v in invariant], loc)
    acc0 = rw.op("constant", loc=loc, value=0.0, shape=(m, n), dtype=ft)
    acc = rw.op("scan", acc0, x_steps, *xs, *invariant, regions=[body], loc=loc,
                num_carry=1, num_xs=1 + len(xs), length=steps)
    if not block:
        acc = rw.op("mul", acc, s_param, loc=loc)
    out = acc if node.output.type.rank == 2 else rw.op("reshape", acc, loc=loc,
                                                        shape=tuple(node.output.type.shape))
    src = rw.params.get(wt.name)
    before = int(src.nbytes) if src is not None else int(wt.q.nbytes)
    after = int(rw.params[stored.name].nbytes)
    how = ", packed two per byte by halves of each chunk" if packed else ""
    rw.remark("applied", f"weight-only {dtype}: @{wt.name} stored as @{stored.name} ({before} -> "
                         f"{after} bytes{how}), "
                         f"streamed through the {node.op}: {steps} steps of {rows} rows "
                         f"({rows * n * ct.itemsize} bytes of float at a time) for {m} "
                         f"row(s) of activations, so the float weight is never materialized",
              node, mode="weight_only", dtype=dtype, bytes_before=before, bytes_after=after,
              stream_steps=steps, stream_rows=rows)
    return rw.replace(node, out)


def _body(rw: Rewriter, m: int, n: int, rows: int, block: int, dtype: str, ft: str,
          xs_types: list, inv_types: list, loc: str):
    """The scan body: (acc, x chunk, weight chunk, [scale, zp chunks], [zp]) -> acc'. Each
    piece of the chunk (the chunk; the halves of a packed one; its groups) adds
    ``x[:, piece] @ (float(q) - zp)``, times its group's scale when blocked."""
    b = GraphBuilder("stream", namer=rw.namer, loc=loc)
    acc = b.input(TensorType((m, n), ft))
    xc = b.input(TensorType((m, rows), ft))
    w_t, *sz_t = xs_types
    wc = b.input(w_t.with_shape(tuple(w_t.shape[1:])))
    chunked = [b.input(t.with_shape(tuple(t.shape[1:]))) for t in sz_t]
    inv = [b.input(t) for t in inv_types]
    scale, zp = (chunked + [None])[:2] if block else (None, inv[0] if inv else None)
    if dtype in ("i4", "u4"):
        if dtype == "i4":  # sign-extend each nibble with arithmetic shifts
            p = b.op("bitcast_convert", wc, dtype="i8")
            four = b.constant(4, "i8")
            lo = b.op("shift_right_arithmetic", b.op("shift_left", p, four), four)
            hi = b.op("shift_right_arithmetic", p, four)
        else:
            lo = b.op("and", wc, b.constant(15, "u8"))
            hi = b.op("shift_right_logical", wc, b.constant(4, "u8"))
        pieces = [(lo, 0), (hi, rows // 2)]
    else:
        pieces = [(wc, 0)]
    out = acc
    for vals, start in pieces:
        length = vals.type.shape[0]
        step = block or length
        for g0 in range(0, length, step):  # one group at a time when blocked
            v = vals if step == length else b.op("slice", vals, start=(g0, 0),
                                                 limit=(g0 + step, n))
            w = b.op("convert", v, dtype=ft)
            gi = (start + g0) // block if block else 0
            if zp is not None:
                z = zp if not block else b.op("slice", zp, start=(gi, 0), limit=(gi + 1, n))
                w = b.op("sub", w, z)
            cols = start + g0
            xp = xc if (cols, step) == (0, rows) else b.op(
                "slice", xc, start=(0, cols), limit=(m, cols + step))
            part = b.op("dot_general", xp, w, contracting_dims=((1,), (0,)))
            if block:
                part = b.op("mul", part, b.op("slice", scale, start=(gi, 0), limit=(gi + 1, n)))
            out = b.op("add", out, part)
    return b.build([out])
