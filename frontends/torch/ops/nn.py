"""Neural-network ATen ops: convolution, matmuls, norms, softmax, pooling, dropout."""
from __future__ import annotations

import numpy as np

from ....ir import Value
from ....ir.dims import DimExpr
from ..context import Missing as _Missing
from ._util import acc_dtype, axis, count, keep_shape
from ..registry import aten_op

_LAYOUTS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def _per_dim(v, n: int) -> tuple[int, ...]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _channel_bias(ctx, y: Value, bias: Value | None) -> Value:
    if bias is None:
        return y
    shape = (1, bias.shape[0]) + (1,) * (y.type.rank - 2)
    return ctx.op("add", y, ctx.reshape(ctx.convert(bias, y.dtype), shape))


@aten_op("aten.convolution.default")
def _convolution(ctx, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    nsp = x.type.rank - 2
    if nsp not in _LAYOUTS:
        ctx.unsupported(f"{nsp}-d convolution")
    stride, padding = _per_dim(stride, nsp), _per_dim(padding, nsp)
    dilation, output_padding = _per_dim(dilation, nsp), _per_dim(output_padding, nsp)
    if not transposed:
        y = ctx.op("conv", x, w, dimension_numbers=_LAYOUTS[nsp], window_strides=stride,
                   padding=tuple((p, p) for p in padding), rhs_dilation=dilation,
                   feature_group_count=int(groups))
        return _channel_bias(ctx, y, bias)
    # A transposed conv is a conv over the stride-dilated input with the flipped kernel,
    # its in/out channels swapped within each group.
    cin, cout_g, *k = w.shape
    g = int(groups)
    wt = ctx.reshape(w, (g, cin // g, cout_g, *k))
    wt = ctx.op("transpose", wt, permutation=(0, 2, 1, *range(3, 3 + nsp)))
    wt = ctx.reshape(wt, (g * cout_g, cin // g, *k))
    wt = ctx.op("rev", wt, axes=tuple(range(2, 2 + nsp)))
    pads = tuple((d * (kk - 1) - p, d * (kk - 1) - p + op)
                 for kk, d, p, op in zip(k, dilation, padding, output_padding))
    y = ctx.op("conv", x, wt, dimension_numbers=_LAYOUTS[nsp], padding=pads,
               lhs_dilation=stride, rhs_dilation=dilation, feature_group_count=g)
    return _channel_bias(ctx, y, bias)


def _matmul(ctx, a, b):
    return ctx.op("dot_general", a, b, contracting_dims=((a.type.rank - 1,), (0,)))


def _scaled(ctx, v, k):
    return v if k == 1 else ctx.op("mul", v, ctx.scalar(k, v.dtype))


@aten_op("aten.mm.default")
def _mm(ctx, a, b):
    return _matmul(ctx, a, b)


@aten_op("aten.addmm.default")
def _addmm(ctx, bias, a, b, beta=1, alpha=1):
    y = _scaled(ctx, _matmul(ctx, a, b), alpha)
    if beta == 0:
        return y
    return ctx.op("add", y, _scaled(ctx, ctx.convert(bias, y.dtype), beta))


@aten_op("aten.bmm.default")
def _bmm(ctx, a, b):
    return ctx.op("dot_general", a, b, contracting_dims=((2,), (1,)), batch_dims=((0,), (0,)))


# --- normalization -----------------------------------------------------------------------------
def _ones_or(ctx, v, n, value, dtype):
    return v if v is not None else ctx.const(np.full((n,), value), dtype)


@aten_op("aten._native_batch_norm_legit_no_training.default")
def _batch_norm_eval(ctx, x, weight, bias, mean, var, momentum, eps):
    c = x.shape[1]
    weight = _ones_or(ctx, weight, c, 1.0, x.dtype)
    bias = _ones_or(ctx, bias, c, 0.0, x.dtype)
    y = ctx.op("batch_norm", x, weight, bias, mean, var, epsilon=float(eps), axis=1)
    return y, _Missing("save_mean"), _Missing("save_invstd")


def _batch_stats_norm(ctx, x, weight, bias, eps):
    over = tuple(i for i in range(x.type.rank) if i != 1)
    mean, rstd, y = _normalize(ctx, x, over, eps)
    shape = (1, x.shape[1]) + (1,) * (x.type.rank - 2)
    if weight is not None:
        y = ctx.op("mul", y, ctx.reshape(weight, shape))
    if bias is not None:
        y = ctx.op("add", y, ctx.reshape(bias, shape))
    return y, ctx.reshape(mean, (x.shape[1],)), ctx.reshape(rstd, (x.shape[1],))


@aten_op("aten._native_batch_norm_legit.no_stats")
def _batch_norm_no_stats(ctx, x, weight, bias, training, momentum, eps):
    return _batch_stats_norm(ctx, x, weight, bias, eps)


def _normalize(ctx, x, over, eps):
    """(mean, rstd, normalized x) over ``over`` axes, accumulated in f32 for f16/bf16."""
    dt = x.dtype
    xa = ctx.convert(x, acc_dtype(dt))
    keep = keep_shape(x, over)
    n = count(ctx, x, over, xa.dtype)
    mean = ctx.op("div", ctx.reshape(ctx.op("reduce_sum", xa, axes=over), keep), n)
    xc = ctx.op("sub", xa, mean)
    var = ctx.op("div", ctx.reshape(ctx.op("reduce_sum", ctx.op("mul", xc, xc), axes=over), keep), n)
    rstd = ctx.op("rsqrt", ctx.op("add", var, ctx.scalar(eps, xa.dtype)))
    y = ctx.convert(ctx.op("mul", xc, rstd), dt)
    return ctx.convert(mean, dt), ctx.convert(rstd, dt), y


@aten_op("aten.native_layer_norm.default")
def _layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    over = tuple(range(x.type.rank - len(normalized_shape), x.type.rank))
    mean, rstd, y = _normalize(ctx, x, over, eps)
    if weight is not None:
        y = ctx.op("mul", y, weight)
    if bias is not None:
        y = ctx.op("add", y, bias)
    return y, mean, rstd


@aten_op("aten.native_group_norm.default")
def _group_norm(ctx, x, weight, bias, n, c, hw, group, eps):
    shape = x.shape
    xg = ctx.reshape(x, (shape[0], int(group), _prod(shape[1:]) // int(group)))
    mean, rstd, y = _normalize(ctx, xg, (2,), eps)
    y = ctx.reshape(y, shape)
    cshape = (1, shape[1]) + (1,) * (x.type.rank - 2)
    if weight is not None:
        y = ctx.op("mul", y, ctx.reshape(weight, cshape))
    if bias is not None:
        y = ctx.op("add", y, ctx.reshape(bias, cshape))
    return y, ctx.reshape(mean, (shape[0], int(group))), ctx.reshape(rstd, (shape[0], int(group)))


def _prod(dims):
    out = 1
    for d in dims:
        out = out * d
    return out


@aten_op("aten._softmax.default")
def _softmax(ctx, x, dim, half_to_float=False):
    return ctx.convert(ctx.op("softmax", x, axis=axis(dim, x.type.rank)), ctx.out_dtype)


@aten_op("aten._log_softmax.default")
def _log_softmax(ctx, x, dim, half_to_float=False):
    return ctx.convert(ctx.op("log_softmax", x, axis=axis(dim, x.type.rank)), ctx.out_dtype)


@aten_op("aten.native_dropout.default")
def _dropout(ctx, x, p, train):
    if train:
        ctx.unsupported("dropout in training mode (tensorsmith imports the module in eval mode; "
                        "call F.dropout with training=self.training)")
    return x, _Missing("the dropout mask")


# --- pooling -----------------------------------------------------------------------------------
def _pool_pads(ctx, x, k, s, p, d, ceil_mode):
    """(lo, hi) padding per spatial dim; ceil_mode adds high padding for a last partial window
    that starts inside the input (or its left padding), as torch does."""
    pads = []
    for i, (kk, ss, pp, dd) in enumerate(zip(k, s, p, d)):
        hi = pp
        if ceil_mode:
            size = x.shape[2 + i]
            if isinstance(size, DimExpr):
                ctx.unsupported("ceil_mode pooling over a symbolic dim")
            span = size + 2 * pp - dd * (kk - 1) - 1
            out = -(-span // ss) + 1
            if (out - 1) * ss >= size + pp:
                out -= 1
            hi = (out - 1) * ss + dd * (kk - 1) + 1 - size - pp
        pads.append((pp, max(hi, pp)))
    return pads


@aten_op("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default")
def _max_pool(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    nsp = x.type.rank - 2
    k = _per_dim(kernel_size, nsp)
    s = _per_dim(stride, nsp) if stride else k
    p, d = _per_dim(padding, nsp), _per_dim(dilation, nsp)
    pads = _pool_pads(ctx, x, k, s, p, d, ceil_mode)
    y = ctx.op("reduce_window", x, kind="max", window_dimensions=(1, 1) + k,
               window_strides=(1, 1) + s, padding=((0, 0), (0, 0)) + tuple(pads),
               window_dilation=(1, 1) + d)
    if ctx.target == "aten.max_pool2d.default":
        return y
    return y, _Missing("max-pooling indices")


@aten_op("aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _avg_pool(ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False,
              count_include_pad=True, divisor_override=None):
    nsp = x.type.rank - 2
    k = _per_dim(kernel_size, nsp)
    s = _per_dim(stride, nsp) if stride else k
    p = _per_dim(padding, nsp)
    pads = _pool_pads(ctx, x, k, s, p, (1,) * nsp, ceil_mode)
    win = dict(window_dimensions=(1, 1) + k, window_strides=(1, 1) + s,
               padding=((0, 0), (0, 0)) + tuple(pads))
    xa = ctx.convert(x, acc_dtype(x.dtype))
    total = ctx.op("reduce_window", xa, kind="sum", **win)
    if divisor_override:
        return ctx.convert(ctx.op("div", total, ctx.scalar(divisor_override, xa.dtype)), x.dtype)
    if not any(p) and not ceil_mode or (count_include_pad and not ceil_mode):
        return ctx.convert(ctx.op("div", total, ctx.scalar(int(np.prod(k)), xa.dtype)), x.dtype)
    # Divide each window by how many of its elements it counts (torch: padding counts when
    # count_include_pad, but never the extra ceil_mode padding).
    ones = ctx.op("constant", value=1.0, dtype=xa.dtype, shape=tuple(x.shape))
    if count_include_pad:
        ones = ctx.op("pad", ones, ctx.scalar(1.0, xa.dtype), low=(0, 0) + p, high=(0, 0) + p)
        win["padding"] = ((0, 0), (0, 0)) + tuple((0, hi - lo) for lo, hi in pads)
    n = ctx.op("reduce_window", ones, kind="sum", **win)
    return ctx.convert(ctx.op("div", total, n), x.dtype)


@aten_op("aten._adaptive_avg_pool2d.default", "aten._adaptive_avg_pool3d.default")
def _adaptive_avg_pool(ctx, x, output_size):
    nsp = x.type.rank - 2
    out = _per_dim(output_size, nsp)
    xa = ctx.convert(x, acc_dtype(x.dtype))
    if all(o == 1 for o in out):  # global average: any (symbolic) input size
        over = tuple(range(2, 2 + nsp))
        s = ctx.op("reduce_sum", xa, axes=over, keepdims=True)
        return ctx.convert(ctx.op("div", s, count(ctx, x, over, xa.dtype)), x.dtype)
    y = xa
    for i, o in enumerate(out):  # each spatial dim: a matmul with its averaging matrix
        size = x.shape[2 + i]
        if isinstance(size, DimExpr):
            ctx.unsupported(f"adaptive pooling to {o} bins over a symbolic dim {size}")
        m = np.zeros((size, o), dtype=np.float64)
        for j in range(o):
            lo, hi = (j * size) // o, -(-((j + 1) * size) // o)
            m[lo:hi, j] = 1.0 / (hi - lo)
        y = ctx.op("dot_general", y, ctx.const(m, xa.dtype), contracting_dims=((2,), (0,)))
    # contracting dim 2 each time moved the pooled dim last: the order is back after nsp steps
    return ctx.convert(y, x.dtype)
