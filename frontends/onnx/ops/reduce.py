"""Reductions and their relatives: Reduce*, ArgMax/ArgMin, CumSum/CumProd, TopK, Hardmax,
LpNormalization, LRN, Det."""
from __future__ import annotations

import numpy as np

from ....ir.types import is_float, shape_numel
from ..registry import onnx_op
from ._dims import dim_count
from ._util import norm_axis


# --- axes ------------------------------------------------------------------------------------
def reduce_axes(ctx, x, axes_input=None, *, axes_from_input: bool) -> tuple[int, ...] | None:
    """The normalized axes a Reduce* node reduces, or None when it is the identity
    (empty axes with ``noop_with_empty_axes``)."""
    if axes_from_input:
        axes = None if axes_input is None else ctx.require_known(axes_input, "axes")
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    else:
        axes = ctx.attr("axes", None)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.type.rank))
    return tuple(sorted({norm_axis(a, x.type.rank) for a in axes}))


def element_count(ctx, x, axes, like):
    """The number of elements reduced over ``axes`` as a scalar of ``like``'s dtype."""
    return dim_count(ctx, x, axes, like)


def _sum(ctx, x, axes, keepdims):
    return ctx.op("reduce_sum", x, axes=axes, keepdims=keepdims)


def _in_float(ctx, x, fn):
    """``fn(x)`` computed in a float type (ints: f32), cast back to ``x``'s dtype."""
    if is_float(x.dtype):
        return fn(x)
    return ctx.convert(fn(ctx.convert(x, "f32")), x.dtype)


def _logsumexp(ctx, x, axes, keepdims):
    # max-shifted for stability; a non-finite max (empty set, all -inf) shifts by 0
    m = ctx.op("reduce_max", x, axes=axes, keepdims=True)
    m = ctx.op("select", ctx.op("is_finite", m), m, ctx.scalar(0, x))
    # x == max gives exactly 0: XLA:CPU may fuse x's producer and the subtraction into an FMA
    # whose residue overflows exp (codegen/rules/softmax.py)
    d = ctx.op("select", ctx.op("eq", x, m), ctx.scalar(0, x), ctx.op("sub", x, m))
    s = _sum(ctx, ctx.op("exp", d), axes, keepdims)
    m = m if keepdims else ctx.op("reshape", m, shape=tuple(s.shape))
    return ctx.op("add", ctx.op("log", s), m)


def _reduce_body(kind: str):
    """The computation of one Reduce* kind on (ctx, x, axes, keepdims)."""
    def max_min(ctx, x, axes, keepdims):
        if x.dtype == "bool":
            op = "reduce_or" if kind == "max" else "reduce_and"
        else:
            op = f"reduce_{kind}"
        return ctx.op(op, x, axes=axes, keepdims=keepdims)

    def mean(ctx, x, axes, keepdims):
        s = _sum(ctx, x, axes, keepdims)
        return ctx.op("div", s, element_count(ctx, x, axes, s))

    bodies = {
        "sum": lambda ctx, x, axes, kd: _sum(ctx, x, axes, kd),
        "prod": lambda ctx, x, axes, kd: ctx.op("reduce_prod", x, axes=axes, keepdims=kd),
        "max": max_min, "min": max_min, "mean": mean,
        "l1": lambda ctx, x, axes, kd: _sum(ctx, ctx.op("abs", x), axes, kd),
        "sum_square": lambda ctx, x, axes, kd: _sum(ctx, ctx.op("mul", x, x), axes, kd),
        "l2": lambda ctx, x, axes, kd: _in_float(
            ctx, x, lambda y: ctx.op("sqrt", _sum(ctx, ctx.op("mul", y, y), axes, kd))),
        "log_sum": lambda ctx, x, axes, kd: _in_float(
            ctx, x, lambda y: ctx.op("log", _sum(ctx, y, axes, kd))),
        "log_sum_exp": lambda ctx, x, axes, kd: _in_float(
            ctx, x, lambda y: _logsumexp(ctx, y, axes, kd)),
    }
    return bodies[kind]


def _reduce_converter(kind: str, axes_from_input: bool):
    body = _reduce_body(kind)

    def convert(ctx, x, axes=None):
        ax = reduce_axes(ctx, x, axes, axes_from_input=axes_from_input)
        if ax is None:  # empty axes with noop_with_empty_axes: the input itself
            return x
        return body(ctx, x, ax, bool(ctx.attr("keepdims", 1)))
    return convert


# (ONNX op, kind, opset from which axes is an input)
_REDUCES = [("ReduceSum", "sum", 13), ("ReduceMean", "mean", 18), ("ReduceMax", "max", 18),
            ("ReduceMin", "min", 18), ("ReduceProd", "prod", 18), ("ReduceL1", "l1", 18),
            ("ReduceL2", "l2", 18), ("ReduceLogSum", "log_sum", 18),
            ("ReduceLogSumExp", "log_sum_exp", 18), ("ReduceSumSquare", "sum_square", 18)]
for _op, _kind, _since in _REDUCES:
    onnx_op(_op)(_reduce_converter(_kind, False))
    onnx_op(_op, since=_since)(_reduce_converter(_kind, True))


# --- arg reductions, scans, top-k --------------------------------------------------------------
def _arg(op):
    def convert(ctx, x):
        axis = norm_axis(ctx.attr("axis", 0), x.type.rank)
        return ctx.op(op, x, axis=axis, keepdims=bool(ctx.attr("keepdims", 1)), index_dtype="i64",
                      select_last_index=bool(ctx.attr("select_last_index", 0)))
    return convert


onnx_op("ArgMax")(_arg("argmax"))
onnx_op("ArgMin")(_arg("argmin"))


def _cumulative(op):
    def convert(ctx, x, axis):
        a = ctx.require_known(axis, "axis")
        a = norm_axis(int(np.asarray(a).reshape(-1)[0]), x.type.rank)
        return ctx.op(op, x, axis=a, exclusive=bool(ctx.attr("exclusive", 0)),
                      reverse=bool(ctx.attr("reverse", 0)))
    return convert


onnx_op("CumSum", since=11)(_cumulative("cumsum"))
onnx_op("CumProd", since=26)(_cumulative("cumprod"))


def _top_k(ctx, x, k: int):
    axis = norm_axis(ctx.attr("axis", -1), x.type.rank)
    if not isinstance(x.shape[axis], int):
        ctx.require(x.shape[axis] - k, f"TopK k={k} needs at least k elements on axis {axis}")
    values, indices = ctx.op("top_k", x, k=k, axis=axis, largest=bool(ctx.attr("largest", 1)),
                             index_dtype="i64")
    return values, indices


@onnx_op("TopK")
def _top_k_v1(ctx, x):
    return _top_k(ctx, x, int(ctx.attr("k")))


@onnx_op("TopK", since=10)
def _top_k_v10(ctx, x, k):
    k = ctx.require_known(k, "k")
    return _top_k(ctx, x, int(np.asarray(k).reshape(-1)[0]))


# --- normalizations ------------------------------------------------------------------------------
def one_hot_max(ctx, x, axis: int):
    """1 where ``x`` has its (first) maximum along ``axis``, else 0, in ``x``'s dtype."""
    idx = ctx.op("argmax", x, axis=axis, keepdims=True, index_dtype="i32")
    pos = ctx.op("iota", dtype="i32", shape=tuple(x.shape), axis=axis)
    return ctx.convert(ctx.op("eq", pos, idx), x.dtype)


def coerce_2d(ctx, x, axis: int, fn):
    """``fn`` applied on ``x`` flattened to 2-D at ``axis`` (opset < 13 softmax family)."""
    shape = tuple(x.shape)
    y = fn(ctx.reshape(x, (shape_numel(shape[:axis]), shape_numel(shape[axis:]))), 1)
    return ctx.reshape(y, shape)


@onnx_op("Hardmax")
def _hardmax_v1(ctx, x):
    axis = norm_axis(ctx.attr("axis", 1), x.type.rank)
    return coerce_2d(ctx, x, axis, lambda y, a: one_hot_max(ctx, y, a))


@onnx_op("Hardmax", since=13)
def _hardmax(ctx, x):
    return one_hot_max(ctx, x, norm_axis(ctx.attr("axis", -1), x.type.rank))


@onnx_op("LpNormalization")
def _lp_normalization(ctx, x):
    axis = norm_axis(ctx.attr("axis", -1), x.type.rank)
    p = ctx.attr("p", 2)
    if p == 1:
        norm = _sum(ctx, ctx.op("abs", x), (axis,), True)
    elif p == 2:
        norm = ctx.op("sqrt", _sum(ctx, ctx.op("mul", x, x), (axis,), True))
    else:
        ctx.unsupported(f"p={p} (ONNX allows 1 or 2)")
    zero = ctx.scalar(0, x)
    # a zero norm gives 0, not 0/0 (as the reference does)
    safe = ctx.op("select", ctx.op("eq", norm, zero), ctx.scalar(1, x), norm)
    y = ctx.op("div", x, safe)
    return ctx.op("select", ctx.broadcast_to(ctx.op("eq", norm, zero), x.shape), zero, y)


@onnx_op("LRN")
def _lrn(ctx, x):
    size = int(ctx.attr("size"))
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    rank = x.type.rank
    # sum of squares over a window of `size` channels centred on each channel
    win = (1, size) + (1,) * (rank - 2)
    pad = ((0, 0), ((size - 1) // 2, size - 1 - (size - 1) // 2)) + ((0, 0),) * (rank - 2)
    sq = ctx.op("reduce_window", ctx.op("mul", x, x), kind="sum", window_dimensions=win,
                padding=pad)
    scale = ctx.op("add", ctx.scalar(bias, x), ctx.op("mul", sq, ctx.scalar(alpha / size, x)))
    return ctx.op("div", x, ctx.op("pow", scale, ctx.scalar(beta, x)))


@onnx_op("Det", since=11)
def _det(ctx, x):
    return ctx.op("det", x)
