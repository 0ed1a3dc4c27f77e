"""lower-quant: fake-quant pairs around dot/conv become real low-precision compute.

W8A8: ``dot(dequantize(quantize(x)), dequantize(Wq))`` becomes an i8 x i8 -> i32 dot/conv
(exact integer accumulation), zero-point corrections, and one multiply by ``s_x * s_w`` per
output channel. Weight-only: the weight is stored in its low dtype (i8; i4 packed two per
byte; fp8) and dequantized in the program; a large weight read by few rows of activations
(batch x tokens <= ``stream_rows``) is streamed through a loop over chunks of it instead of
dequantized whole (``quant_stream.py``). fp8 with fp8 activations: an f8 x f8 dot
accumulating in f32. What the rewrites match is in ``quant_match.py``.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.types import is_float, itemsize_bits, numpy_dtype
from .context import PassContext
from .quant_match import (F8 as _F8, NARROW_INT as _NARROW_INT, Linear, QAct, QWeight,
                          channel_shape as _channel_shape, dequantize_array, linear_geometry,
                          match_activation, match_weight, quantize_array, weight_of)
from .quant_stream import stream_weight_only
from .registry import Option, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns, pattern

# Most activation rows for streaming a weight-only dot: on 4096x4096 int8 layers the streamed
# form beat the whole-weight one at 8, 32, 128 and 256 rows (benchmarks/quant_speed.py).
STREAM_ROWS = 256
# Products per output below which the zero-point-corrected i32 sum cannot overflow (255 * 255 * K).
_ACC_LIMIT = 2 ** 31 // (255 * 255)

__all__ = ["dequantize_array", "float_twin", "lower_quant", "quantize_array"]

# --- the rewrites -----------------------------------------------------------------------------
def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit values two per byte along axis 0 (padded to even): row 2j low, row 2j+1 high."""
    v = np.asarray(q).astype(np.int16) & 0xF
    if v.shape[0] % 2:
        v = np.concatenate([v, np.zeros((1,) + v.shape[1:], v.dtype)])
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


PACKED_NOTE = ("stored packed two per byte in u8 and unpacked in the program: a compiled XLA:CPU "
               "program wants int4 params in a packed layout that device_put does not give, "
               "and XLA:CPU has no s4 dot")


def _unpack(rw: Rewriter, packed: Value, wt: QWeight, loc: str) -> Value:
    """The 4-bit weight values of a packed u8 param as i8 (i4) or u8 (u4), in ``wt``'s shape."""
    signed = wt.qp.dtype == "i4"
    if signed:  # sign-extend each nibble with arithmetic shifts
        p = rw.op("bitcast_convert", packed, loc=loc, dtype="i8")
        four = rw.op("constant", loc=loc, value=4, shape=(), dtype="i8")
        lo = rw.op("shift_right_arithmetic", rw.op("shift_left", p, four, loc=loc), four, loc=loc)
        hi = rw.op("shift_right_arithmetic", p, four, loc=loc)
    else:
        four = rw.op("constant", loc=loc, value=4, shape=(), dtype="u8")
        mask = rw.op("constant", loc=loc, value=15, shape=(), dtype="u8")
        lo = rw.op("and", packed, mask, loc=loc)
        hi = rw.op("shift_right_logical", packed, four, loc=loc)
    pairs = rw.op("concatenate", rw.op("expand_dims", lo, loc=loc, axes=(1,)),
                  rw.op("expand_dims", hi, loc=loc, axes=(1,)), loc=loc, axis=1)
    shape = tuple(packed.type.shape)
    full = rw.op("reshape", pairs, loc=loc, shape=(2 * shape[0],) + shape[1:])
    k = wt.q.shape[0]
    if 2 * shape[0] != k:
        full = rw.op("slice", full, loc=loc, start=(0,) * len(shape),
                     limit=(k,) + shape[1:], strides=None)
    return full


def low_weight(rw: Rewriter, wt: QWeight, loc: str) -> tuple[Value, int, str]:
    """The quantized weight as the program reads it (its own dtype, or i8/u8 unpacked from
    4-bit pairs), the bytes it is stored in, and a note for the remark."""
    if wt.qp.dtype in ("i4", "u4"):
        packed = rw.add_param(pack_nibbles(wt.q), f"{wt.stem}/q4")
        rw.carry_annotations(wt.name, packed)
        # says how to read it, and keeps fold-constants from storing it unpacked again
        rw.annotate(packed, "packed", {"bits": 4, "axis": 0, "signed": wt.qp.dtype == "i4",
                                       "length": int(wt.q.shape[0])})
        return _unpack(rw, packed, wt, loc), int(packed.type.nbytes()), PACKED_NOTE
    if wt.qp.dtype in ("i2", "u2"):  # no packing for 2 bits: widened to a byte
        wide = "i8" if wt.qp.dtype == "i2" else "u8"
        v = rw.add_param(np.ascontiguousarray(wt.q.astype(numpy_dtype(wide))), f"{wt.stem}/q")
        rw.carry_annotations(wt.name, v)
        return v, int(wt.q.size), f"stored widened to {wide}"
    if wt.stored_low:
        return wt.dq.inputs[0], _nbytes(wt.q, wt.qp.dtype), ""
    v = rw.add_param(np.ascontiguousarray(wt.q), f"{wt.stem}/q")
    rw.carry_annotations(wt.name, v)  # the quant parameters stay findable on the stored weight
    return v, _nbytes(wt.q, wt.qp.dtype), ""


def _nbytes(arr: np.ndarray, dtype: str) -> int:
    return (arr.size * itemsize_bits(dtype) + 7) // 8


def store_weight_low(rw: Rewriter, node: Node, w8a8: bool = False):
    """dequantize(quantize(@W)) -> dequantize(@W/q): the weight kept in its low dtype."""
    src = rw.producer(node.inputs[0])
    if src is None or src.op != "quantize" or not rw.is_param(src.inputs[0]):
        return None
    wt = weight_of(rw, node)
    if wt is None:
        return None
    users = [u for u in rw.users.get(node.output.name, ()) if u.op in ("dot_general", "conv")]
    if rw.num_uses(node.output) != len(users) or not users:
        return None  # a weight read by other ops stays float (a gather of an embedding...)
    if w8a8:
        rw.producers[node.output.name] = node  # as the sweep will have it when it reaches u
        # (a plan's missed remark is said once: the driver drops repeats)
        if any(plan_w8a8(rw, u) is not None for u in users):
            return None  # the W8A8 rewrite of that dot/conv stores it
    dtype = wt.qp.dtype
    wq, stored, note = low_weight(rw, wt, node.loc)
    extra = list(node.inputs[2:])
    if extra and wq.type.dtype != dtype:  # the zero point follows the unpacked values' type
        zp = np.ascontiguousarray(wt.qp.zp.astype(numpy_dtype(wq.type.dtype)))
        extra = [rw.add_param(zp, f"{wt.stem}/zero_point")]
    out = rw.op("dequantize", wq, node.inputs[1], *extra, loc=node.loc, **dict(node.attrs))
    w = rw.param_array(src.inputs[0])
    where = wq.name if rw.is_param(wq) else f"{wt.stem}/q4"
    for u in users:
        rw.remark("applied", f"weight-only {dtype}: @{wt.name} stored as @{where} "
                             f"({w.nbytes} -> {stored} bytes), dequantized in the {u.op}"
                             f"{'; ' + note if note else ''}", u, mode="weight_only", dtype=dtype,
                  bytes_before=int(w.nbytes), bytes_after=stored)
    return rw.replace(node, out)


def _fits_low(act: QAct, wt: QWeight) -> str | None:
    """Why this activation/weight pair has no low-precision dot (None: it has one)."""
    a, w = act.qp.dtype, wt.qp.dtype
    if a in _F8 or w in _F8:
        if a != w:
            return f"activation {a} and weight {w} are not the same fp8 type"
        if not (act.qp.zero_free and wt.qp.zero_free):
            return "fp8 with a nonzero zero point"
        return None
    if a not in _NARROW_INT or w not in _NARROW_INT:
        return f"activation {a} x weight {w} is not an 8-bit-or-narrower integer pair"
    if wt.qp.block:
        return f"the weight scale varies along the reduction (group size {wt.qp.block})"
    return None


def plan_w8a8(rw: Rewriter, node: Node, strict: bool = False):
    """``(side, weight, activation, geometry)`` when ``node`` can run W8A8 (or fp8), else None
    (a ``missed`` remark says why when both operands are quantized, or when ``strict``)."""
    if node.op not in ("dot_general", "conv") or not is_float(node.output.type.dtype):
        return None
    found = None
    for side in ((1,) if node.op == "conv" else (1, 0)):
        wt = match_weight(rw, node.inputs[side])
        if wt is not None:
            found = side, wt
            break
    if found is None:
        return None
    side, wt = found
    act = match_activation(rw, node.inputs[1 - side])
    if act is None:
        if strict:
            rw.remark("missed", f"no W8A8 for {node.op} %{node.name}: its input "
                                f"%{node.inputs[1 - side].name} is not fake-quantized", node)
        return None
    if isinstance(act, str):
        rw.remark("missed", f"no W8A8 for {node.op} %{node.name}: {act}", node)
        return None
    why = _fits_low(act, wt)
    geo = linear_geometry(node, side)
    if why is None and geo is None:
        why = "batch dims, batch groups or a symbolic weight shape"
    if why is None and not wt.qp.per_tensor and wt.qp.axis % wt.q.ndim not in geo.out_axis:
        why = f"the weight scale runs along axis {wt.qp.axis}, not an output channel"
    if why is None and wt.qp.dtype not in _F8 and geo.k > _ACC_LIMIT:
        why = f"{geo.k} products per output could overflow the i32 accumulator"
    if why is None and not wt.qp.zero_free and (node.op == "conv" or side != 1):
        why = "an affine weight zero point (supported for x @ W dots only)"
    if why is None and node.op == "conv" and not act.qp.zero_free and any(
            d != 1 for d in node.attrs.get("lhs_dilation") or ()):
        why = "an affine activation with lhs dilation"
    if why is not None:
        rw.remark("missed", f"no W8A8 for {node.op} %{node.name}: {why}", node)
        return None
    return side, wt, act, geo


def lower_w8a8(rw: Rewriter, node: Node, strict: bool = False):
    """dot(fq(x), dq(Wq)) -> convert(dot_i32(q(x), Wq) + corrections) * (s_x * s_w)."""
    plan = plan_w8a8(rw, node, strict)
    if plan is None:
        return None
    side, wt, act, geo = plan
    lower = _lower_fp8 if wt.qp.dtype in _F8 else _lower_int8
    return rw.replace(node, lower(rw, node, side, act, wt, geo))


def _scalar(arr: np.ndarray | None) -> int:
    return 0 if arr is None else int(np.asarray(arr).reshape(-1)[0])


def _lower_int8(rw: Rewriter, node: Node, side: int, act: QAct, wt: QWeight, geo: Linear):
    out_t = node.output.type
    # Every narrow integer maps into i8 exactly: u8 by subtracting 128 from values and zero
    # point, i4/u4/i2 by widening (XLA:CPU has no s4 dot).
    zx = _scalar(act.qp.zp)
    if act.qp.dtype == "i8":
        qx = act.q
    elif act.qp.dtype == "u8" and act.quantize is not None:  # quantize straight to i8
        zx -= 128
        zxp = rw.add_param(np.asarray(zx, np.int8), f"{wt.stem}/x_zero_point")
        qx = rw.op("quantize", act.quantize.inputs[0], act.quantize.inputs[1], zxp,
                   loc=act.quantize.loc, axis=0, block_size=0, dtype="i8")
    elif act.qp.dtype == "u8":  # q - 128 as i8: flip the top bit
        zx -= 128
        top = rw.op("constant", loc=node.loc, value=128, shape=(), dtype="u8")
        qx = rw.op("bitcast_convert", rw.op("xor", act.q, top, loc=node.loc), loc=node.loc,
                   dtype="i8")
    else:
        qx = rw.op("convert", act.q, loc=node.loc, dtype="i8")
    qw = wt.q.astype(np.int32)
    zw = None if wt.qp.zero_free else np.asarray(wt.qp.zp, np.int32).reshape(-1)
    if wt.qp.dtype == "u8":
        qw = qw - 128
        zw = (np.zeros(1, np.int32) if zw is None else zw) - 128
    note = ""
    if wt.qp.dtype == "i8" and wt.stored_low:
        wv, after = wt.dq.inputs[0], wt.q.size
    elif wt.qp.dtype in ("i8", "u8"):
        wv = rw.add_param(np.ascontiguousarray(qw.astype(np.int8)), f"{wt.stem}/q")
        rw.carry_annotations(wt.name, wv)
        after = wt.q.size
    else:  # narrower: stored at its own width, widened to i8 for the dot
        wv, after, note = low_weight(rw, wt, node.loc)
        if wv.type.dtype != "i8":
            wv = rw.op("convert", wv, loc=node.loc, dtype="i8")
    attrs = dict(node.attrs)
    attrs["preferred_element_type"] = "i32"
    lhs_x = qx
    if node.op == "conv" and zx != 0 and _padded(attrs):
        # Padding must read as the zero point (real 0.0), not as integer 0: pad explicitly.
        from ..ir.ops.nn import conv_spatial
        lspec, rspec, _ = attrs["dimension_numbers"]
        pads = {p: attrs["padding"][k] for k, p in enumerate(conv_spatial(lspec, rspec))}
        pv = rw.op("constant", loc=node.loc, value=zx, shape=(), dtype="i8")
        lhs_x = rw.op("pad", qx, pv, loc=node.loc,
                      low=tuple(pads.get(i, (0, 0))[0] for i in range(out_t.rank)),
                      high=tuple(pads.get(i, (0, 0))[1] for i in range(out_t.rank)))
        attrs["padding"] = tuple((0, 0) for _ in attrs["padding"])
    acc = rw.op(node.op, *([lhs_x, wv] if side == 1 else [wv, lhs_x]), loc=node.loc, **attrs)
    o_axis = None if wt.qp.per_tensor else geo.out_axis[wt.qp.axis % wt.q.ndim]
    # sum (qx - zx)(qw - zw) = acc - zx*colsum(qw) - zw*rowsum(qx) + K*zx*zw
    colsum = qw.sum(axis=geo.contract, dtype=np.int64)  # laid out like the free weight axes
    corr = -zx * colsum
    if zw is not None:
        corr = corr + geo.k * zx * _free_shaped(zw, colsum.shape, wt, geo)
    if np.any(corr):
        c = corr.astype(np.int32)  # |corr| <= K * 128 * 255 < 2**31 under the K bound
        if node.op == "conv":
            c = _channel_shape(out_t, next(iter(geo.out_axis.values())), c.reshape(-1))
        elif side == 0:  # W @ x: the weight's free axes come first in the output
            c = c.reshape(c.shape + (1,) * (out_t.rank - c.ndim))
        acc = rw.op("add", acc, rw.add_param(np.ascontiguousarray(c),
                                             f"{wt.stem}/zero_point_correction"), loc=node.loc)
    if zw is not None:  # x @ W only (checked): the row sums of q(x) times the weight zero point
        xi = rw.op("convert", lhs_x, loc=node.loc, dtype="i32")
        lc = node.attrs["contracting_dims"][0]
        rows = rw.op("reduce_sum", xi, loc=node.loc, axes=tuple(lc), keepdims=False)
        rows = rw.op("expand_dims", rows, loc=node.loc,
                     axes=tuple(range(rows.type.rank, out_t.rank)))
        zwv = _free_shaped(zw, colsum.shape, wt, geo).astype(np.int32)
        term = rw.op("mul", rows, rw.add_param(np.ascontiguousarray(zwv),
                                               f"{wt.stem}/w_zero_point"), loc=node.loc)
        acc = rw.op("sub", acc, term, loc=node.loc)
    ct = np.float64 if out_t.dtype == "f64" else np.float32
    sx = float(np.asarray(act.qp.scale, ct).reshape(-1)[0])
    sw = np.asarray(wt.qp.scale, ct).reshape(-1)
    comb = (ct(sx) * sw).astype(ct)
    comb = _channel_shape(out_t, o_axis, comb) if comb.size > 1 else comb.reshape(())
    y = rw.op("convert", acc, loc=node.loc, dtype="f64" if ct is np.float64 else "f32")
    y = rw.op("mul", y, rw.add_param(np.ascontiguousarray(comb), f"{wt.stem}/requant_scale"),
              loc=node.loc)
    y = _times_dynamic_scale(rw, y, act, node)
    if y.type.dtype != out_t.dtype:
        y = rw.op("convert", y, loc=node.loc, dtype=out_t.dtype)
    w = rw.params.get(wt.name) if not wt.stored_low else None
    before = int(w.nbytes) if w is not None else _nbytes(wt.q, wt.qp.dtype)
    widened = f"; {wt.qp.dtype} weights {note}, widened to i8 for the dot" if note else ""
    stored = (f"(stored {wt.qp.dtype}, {after} bytes)" if wt.stored_low else
              f"({before} -> {after} bytes)")
    xs = "scale computed per call (dynamic)" if act.dynamic_scale else f"zero point {zx}"
    rw.remark("applied", f"W8A8: {node.op} %{node.name} runs i8 x i8 -> i32 with "
                         f"{'per-channel' if sw.size > 1 else 'per-tensor'} weights @{wt.name} "
                         f"{stored}, activation {xs}, "
                         f"requantize by s_x*s_w{widened}", node, mode="w8a8",
              dtype=wt.qp.dtype, bytes_before=before, bytes_after=after)
    return y


def _times_dynamic_scale(rw: Rewriter, y: Value, act: QAct, node: Node) -> Value:
    """``y`` times the activation scale the program computes per call (dynamic), if any."""
    s = act.dynamic_scale
    if s is None:
        return y
    if s.type.dtype != y.type.dtype:
        s = rw.op("convert", s, loc=node.loc, dtype=y.type.dtype)
    return rw.op("mul", y, s, loc=node.loc)


def _free_shaped(v: np.ndarray, shape: tuple, wt: QWeight, geo: Linear) -> np.ndarray:
    """A per-channel weight vector laid out like the weight's free axes (``colsum``'s shape)."""
    if v.size == 1:
        return np.full(shape, v.reshape(-1)[0], np.int64)
    free = [a for a in range(wt.q.ndim) if a not in geo.contract]
    axis = wt.qp.axis % wt.q.ndim
    return v.astype(np.int64).reshape([v.size if a == axis else 1 for a in free]) * np.ones(shape, np.int64)


def _padded(attrs) -> bool:
    return any(lo or hi for lo, hi in attrs.get("padding") or ())


def _lower_fp8(rw: Rewriter, node: Node, side: int, act: QAct, wt: QWeight, geo: Linear):
    out_t = node.output.type
    wv, _, _ = low_weight(rw, wt, node.loc)
    attrs = dict(node.attrs)
    attrs["preferred_element_type"] = "f32"
    qx = act.q
    acc = rw.op(node.op, *([qx, wv] if side == 1 else [wv, qx]), loc=node.loc, **attrs)
    o_axis = None if wt.qp.per_tensor else geo.out_axis[wt.qp.axis % wt.q.ndim]
    comb = (np.float32(np.asarray(act.qp.scale, np.float32).reshape(-1)[0])
            * np.asarray(wt.qp.scale, np.float32).reshape(-1))
    comb = _channel_shape(out_t, o_axis, comb) if comb.size > 1 else comb.reshape(())
    y = rw.op("mul", acc, rw.add_param(np.ascontiguousarray(comb, np.float32),
                                       f"{wt.stem}/requant_scale"), loc=node.loc)
    y = _times_dynamic_scale(rw, y, act, node)
    if y.type.dtype != out_t.dtype:
        y = rw.op("convert", y, loc=node.loc, dtype=out_t.dtype)
    rw.remark("applied", f"fp8: {node.op} %{node.name} runs {wt.qp.dtype} x {wt.qp.dtype} -> "
                         f"f32 with weights @{wt.name} stored {wt.qp.dtype}", node, mode="fp8",
              dtype=wt.qp.dtype)
    return y


# --- the float twin and the measurement ----------------------------------------------------
@pattern("dequantize-to-float", ops="dequantize")
def dequantize_to_float(rw: Rewriter, node: Node):
    """dequantize(quantize(x)) -> x; dequantize of constant weights -> a float param."""
    src = rw.producer(node.inputs[0])
    if src is not None and src.op == "quantize" and not rw.is_param(src.inputs[0]):
        x = src.inputs[0]
        if x.type == node.output.type:
            return rw.replace(node, x)
        return rw.replace(node, rw.op("convert", x, loc=node.loc, dtype=node.output.type.dtype))
    wt = weight_of(rw, node)
    if wt is None:
        return None
    w = dequantize_array(wt.q, wt.qp.scale, wt.qp.zp, wt.qp.axis, wt.qp.block,
                         numpy_dtype(node.output.type.dtype))
    return rw.replace(node, rw.add_param(w, f"{wt.stem}/float"))


def float_twin(graph: Graph) -> Graph:
    """The graph with every fake-quant pair and weight dequantize folded back to float."""
    return apply_patterns(graph, [dequantize_to_float], None, regions=True)


def _example_inputs(graph: Graph, ctx: PassContext) -> tuple | None:
    if ctx.calibration:
        return tuple(ctx.calibration[0])
    if not all(v.type.is_static for v in graph.inputs):
        return None
    rng = np.random.default_rng(0)
    out = []
    for v in graph.inputs:
        dt = numpy_dtype(v.type.dtype)
        shape = tuple(v.type.shape)
        out.append(rng.standard_normal(shape).astype(dt) if is_float(v.type.dtype)
                   else np.zeros(shape, dt))
    return tuple(out)


def measure(ctx: PassContext, a: Graph, b: Graph, inputs: tuple, repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b`` on ``inputs``, runs interleaved (same conditions)."""
    fa, fb = ctx.executor(a, jit=True), ctx.executor(b, jit=True)
    for _ in range(2):
        fa(*inputs), fb(*inputs)
    times = {0: [], 1: []}
    for r in range(repeats):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate which one runs first
            t0 = time.perf_counter()
            (fa, fb)[i](*inputs)
            times[i].append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def _reads_as_lhs_of_quantized_linear(body: Graph, v: Value) -> bool:
    """Whether a body input feeds a dot/conv whose other operand is a dequantized weight."""
    producers = {o.name: n for n in body.nodes for o in n.outputs}
    for n in body.nodes:
        if n.op in ("dot_general", "conv") and v.name in {u.name for u in n.inputs}:
            other = [u for u in n.inputs if u.name != v.name]
            p = producers.get(other[0].name) if other else None
            if p is not None and p.op == "dequantize":
                return True
    return False


@pattern("sink-dequantize", ops="composite")
def sink_dequantize(rw: Rewriter, node: Node):
    """composite(dequantize(q)) -> composite'(q) whose body starts with the dequantize, so the
    dot/conv of a fused conv/dense + bias + activation sees its quantized input."""
    if not str(node.attrs.get("name", "")).startswith("fused.") or len(node.regions) != 1:
        return None
    body = node.regions[0]
    ins, body_ins, pre = list(node.inputs), list(body.inputs), []
    for i, v in enumerate(node.inputs):
        dq = rw.producer(v)
        if (dq is None or dq.op != "dequantize" or rw.is_param(dq.inputs[0])
                or not all(rw.is_param(p) for p in dq.inputs[1:])
                or dq.output.type != body.inputs[i].type
                or not _reads_as_lhs_of_quantized_linear(body, body.inputs[i])):
            continue
        q = dq.inputs[0]
        inner = Value(rw.namer(), q.type)
        pre.append(Node("dequantize", (inner, *dq.inputs[1:]), (body.inputs[i],), dq.attrs,
                        loc=dq.loc))
        ins[i], body_ins[i] = q, inner
    if not pre:
        return None
    new_body = body.replace(inputs=tuple(body_ins), nodes=tuple(pre) + tuple(body.nodes))
    out = rw.op("composite", *ins, regions=[new_body], loc=node.loc, **dict(node.attrs))
    return rw.replace(node, out)


def patterns(mode: str) -> list[Pattern]:
    """The rewrites of one ``mode`` (auto | w8a8 | weight_only)."""
    found = []
    if mode != "w8a8":
        found.append(Pattern("store-weight-low", partial(store_weight_low, w8a8=mode == "auto"),
                             frozenset({"dequantize"})))
    if mode != "weight_only":
        found.append(Pattern("lower-w8a8", partial(lower_w8a8, strict=mode == "w8a8"),
                             frozenset({"dot_general", "conv"})))
    return found


@register_pass("lower-quant", options=[
    Option("mode", str, "auto", "auto: W8A8 where activations are quantized, weight-only "
           "elsewhere; w8a8: only W8A8; weight_only: only store weights low",
           choices=("auto", "w8a8", "weight_only")),
    Option("min_speedup", float, 0.0, "run the lowered program against its float twin and keep "
           "the fake-quant graph when it is not this many times faster (0: do not measure)",
           range=(0.0, None)),
    Option("repeats", int, 10, "timed runs of each program when measuring", range=(1, None)),
    Option("stream_rows", int, STREAM_ROWS, "weight-only dots with at most this many rows of "
           "activations (batch x tokens) stream the weight through a loop that dequantizes "
           "one chunk at a time (0: never); more rows dequantize the whole weight once",
           range=(0, None)),
    Option("stream_min_bytes", int, 16 << 20, "stream only weights whose float copy is at "
           "least this many bytes", range=(0, None)),
    Option("chunk_bytes", int, 4 << 20, "float bytes of weight dequantized per loop step "
           "when streaming", range=(1, None))])
def lower_quant(graph: Graph, ctx: PassContext, mode: str = "auto", min_speedup: float = 0.0,
                repeats: int = 10, stream_rows: int = STREAM_ROWS, stream_min_bytes: int = 16 << 20,
                chunk_bytes: int = 4 << 20) -> Graph:
    """Run fake-quantized dot/conv in real low precision (int8, int4 or fp8 storage and compute)."""
    stream = dict(max_rows=stream_rows, min_bytes=stream_min_bytes, chunk_bytes=chunk_bytes)
    if min_speedup <= 0:
        return _lower(graph, ctx, mode, stream)
    # the remarks of the program kept are the ones reported
    said = PassContext(pass_name=ctx.pass_name)
    out = _lower(graph, said, mode, stream)
    if out is graph:
        ctx.remarks.extend(said.remarks)
        return out
    ctx.remarks.extend(r for r in said.remarks if r.kind == "missed")
    inputs = _example_inputs(graph, ctx)
    if inputs is None or ctx.executor is None:
        ctx.remark("note", "lowered program not measured (min_speedup): give calibration data "
                           "or static input shapes")
        return out
    twin = float_twin(graph)
    t_low, t_float = measure(ctx, out, twin, inputs, repeats)
    speedup = t_float / t_low
    if speedup < min_speedup and mode == "auto":
        # One kind of lowering may be what is slow (weight-only on XLA:CPU): try each alone.
        for part in ("w8a8", "weight_only"):
            part_said = PassContext(pass_name=ctx.pass_name)
            alone = _lower(graph, part_said, part, stream)
            if alone is graph or alone.to_text() == out.to_text():
                continue
            t_part, t_f = measure(ctx, alone, twin, inputs, repeats)
            if t_f / t_part >= min_speedup and t_f / t_part > speedup:
                ctx.remarks.extend(r for r in part_said.remarks if r.kind == "applied")
                ctx.remark("note", f"kept only the {part} lowerings: all of them ran {speedup:.2f}x "
                                   f"the float twin, {part} alone {t_f / t_part:.2f}x",
                           speedup=t_f / t_part, kept=part)
                return alone
    if speedup < min_speedup:
        ctx.remark("missed", f"kept fake-quant: the lowered program ran {speedup:.2f}x the float "
                             f"twin ({t_low * 1e3:.3f} ms vs {t_float * 1e3:.3f} ms, median of "
                             f"{repeats}), below min_speedup={min_speedup}", speedup=speedup,
                   lowered_ms=t_low * 1e3, float_ms=t_float * 1e3)
        return graph
    ctx.remarks.extend(r for r in said.remarks if r.kind != "missed")
    ctx.remark("note", f"lowered program measured {speedup:.2f}x the float twin "
                       f"({t_low * 1e3:.3f} ms vs {t_float * 1e3:.3f} ms)", speedup=speedup,
               lowered_ms=t_low * 1e3, float_ms=t_float * 1e3)
    return out


def _lower(graph: Graph, ctx: PassContext | None, mode: str, stream: dict | None = None) -> Graph:
    out = graph
    if mode != "weight_only":  # first, so the weight-only rewrite sees what W8A8 will take
        out = apply_patterns(out, [sink_dequantize], ctx, regions=True)
    if mode != "w8a8" and stream and stream["max_rows"] > 0:
        # before store-weight-low, which would store the weight whole for a plain dot
        streamed = Pattern("stream-weight-only", partial(stream_weight_only, mode=mode, **stream),
                           frozenset({"dot_general"}))
        out = apply_patterns(out, [streamed], ctx, regions=True)
    return apply_patterns(out, patterns(mode), ctx, regions=True)
