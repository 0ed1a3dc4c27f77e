"""Reduction ATen ops: sum, mean, amax/amin, max/min with indices, var, any/all, norms, scans."""
from __future__ import annotations

from ....ir.types import is_float
from ._util import acc_dtype, axes, axis, count, keep_shape
from ..registry import aten_op


def _reduce(ctx, op, x, over, keepdim):
    y = ctx.op(op, x, axes=over)
    return ctx.reshape(y, keep_shape(x, over)) if keepdim else y


@aten_op("aten.sum.dim_IntList")
def _sum(ctx, x, dim=None, keepdim=False, dtype=None):
    out = ctx.out_dtype
    xa = ctx.convert(x, acc_dtype(out))
    if xa.dtype == "bool":
        xa = ctx.convert(xa, "i64")
    return ctx.convert(_reduce(ctx, "reduce_sum", xa, axes(dim, x.type.rank), keepdim), out)


@aten_op("aten.mean.dim", "aten.mean.default")
def _mean(ctx, x, dim=None, keepdim=False, dtype=None):
    out = ctx.out_dtype
    xa = ctx.convert(x, acc_dtype(out))
    over = axes(dim, x.type.rank)
    s = _reduce(ctx, "reduce_sum", xa, over, keepdim)
    return ctx.convert(ctx.op("div", s, count(ctx, x, over, xa.dtype)), out)


@aten_op("aten.prod.dim_int", "aten.prod.default")
def _prod(ctx, x, dim=None, keepdim=False, dtype=None):
    xa = ctx.convert(x, ctx.out_dtype)
    return _reduce(ctx, "reduce_prod", xa, axes(dim, x.type.rank), keepdim)


@aten_op("aten.amax.default", "aten.amin.default")
def _amax(ctx, x, dim=(), keepdim=False):
    op = "reduce_max" if ctx.target.startswith("aten.amax") else "reduce_min"
    return _reduce(ctx, op, x, axes(dim, x.type.rank), keepdim)


@aten_op("aten.max.default", "aten.min.default")
def _max_all(ctx, x):
    return ctx.op("reduce_max" if ctx.target.startswith("aten.max") else "reduce_min", x,
                  axes=tuple(range(x.type.rank)))


@aten_op("aten.max.dim", "aten.min.dim")
def _max_dim(ctx, x, dim, keepdim=False):
    kind = "max" if ctx.target.startswith("aten.max") else "min"
    a = axis(dim, x.type.rank)
    values = _reduce(ctx, f"reduce_{kind}", x, (a,), keepdim)
    idx = ctx.op(f"arg{kind}", x, axis=a, keepdims=bool(keepdim), index_dtype="i64")
    return values, idx


@aten_op("aten.argmax.default", "aten.argmin.default")
def _argmax(ctx, x, dim=None, keepdim=False):
    kind = "argmax" if ctx.target.startswith("aten.argmax") else "argmin"
    if dim is None:
        flat = ctx.reshape(x, (_numel(x),))
        y = ctx.op(kind, flat, axis=0, index_dtype="i64")
        return ctx.reshape(y, (1,) * x.type.rank) if keepdim else y
    return ctx.op(kind, x, axis=axis(dim, x.type.rank), keepdims=bool(keepdim), index_dtype="i64")


def _numel(x):
    n = 1
    for d in x.shape:
        n = n * d
    return n


def _var(ctx, x, dim, correction, keepdim):
    dt = ctx.out_dtype
    xa = ctx.convert(x, acc_dtype(dt))
    over = axes(dim, x.type.rank)
    n = count(ctx, x, over, xa.dtype)
    mean = ctx.op("div", ctx.op("reduce_sum", xa, axes=over), n)
    xc = ctx.op("sub", xa, ctx.reshape(mean, keep_shape(x, over)))
    ss = _reduce(ctx, "reduce_sum", ctx.op("mul", xc, xc), over, keepdim)
    denom = ctx.op("sub", n, ctx.scalar(correction, xa.dtype)) if correction else n
    return ctx.convert(ctx.op("div", ss, denom), dt)


@aten_op("aten.var.correction")
def _var_correction(ctx, x, dim=None, correction=None, keepdim=False):
    return _var(ctx, x, dim, 1 if correction is None else correction, keepdim)


def _truthy(ctx, x):
    return x if x.dtype == "bool" else ctx.op("ne", x, ctx.scalar(0, x.dtype))


@aten_op("aten.any.dim", "aten.any.dims", "aten.any.default")
def _any_all(ctx, x, dim=None, keepdim=False):
    op = "reduce_or" if ".any." in ctx.target else "reduce_and"
    y = _reduce(ctx, op, _truthy(ctx, x), axes(dim, x.type.rank), keepdim)
    return ctx.convert(y, ctx.out_dtype)


@aten_op("aten.linalg_vector_norm.default")
def _vector_norm(ctx, x, ord=2, dim=None, keepdim=False, dtype=None):  # noqa: A002
    out = ctx.out_dtype
    xa = ctx.convert(x, acc_dtype(out))
    over = axes(dim, x.type.rank)
    a = ctx.op("abs", xa)
    if ord == float("inf"):
        return ctx.convert(_reduce(ctx, "reduce_max", a, over, keepdim), out)
    if ord == 1:
        return ctx.convert(_reduce(ctx, "reduce_sum", a, over, keepdim), out)
    if ord == 2:
        s = _reduce(ctx, "reduce_sum", ctx.op("mul", xa, xa), over, keepdim)
        return ctx.convert(ctx.op("sqrt", s), out)
    if not isinstance(ord, (int, float)) or ord <= 0:
        ctx.unsupported(f"vector norm of order {ord}")
    p = ctx.scalar(ord, xa.dtype)
    s = _reduce(ctx, "reduce_sum", ctx.op("pow", a, p), over, keepdim)
    return ctx.convert(ctx.op("pow", s, ctx.scalar(1.0 / ord, xa.dtype)), out)


@aten_op("aten.cumsum.default", "aten.cumprod.default")
def _cumsum(ctx, x, dim, dtype=None):
    op = "cumsum" if ".cumsum." in ctx.target else "cumprod"
    xa = ctx.convert(x, ctx.out_dtype)
    return ctx.op(op, xa, axis=axis(dim, x.type.rank))


@aten_op("aten.sort.default", "aten.sort.stable")
def _sort(ctx, x, dim=-1, descending=False, stable=None):
    if ".stable" in ctx.target:  # sort.stable(self, *, stable, dim, descending)
        dim, descending = dim if dim is not None else -1, bool(descending)
    a = axis(dim, x.type.rank)
    idx = ctx.op("iota", dtype="i64", shape=tuple(x.shape), axis=a)
    values, order = ctx.op("sort", x, idx, axis=a, descending=bool(descending), num_keys=1)
    return values, order


@aten_op("aten.topk.default")
def _topk(ctx, x, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    if not isinstance(k, int):
        ctx.unsupported(f"top-k with a symbolic k ({k})")
    values, idx = ctx.op("top_k", x, k=k, axis=axis(dim, x.type.rank), largest=bool(largest),
                         index_dtype="i64")
    return values, idx


__all__ = ["is_float"]


@aten_op("aten._cdist_forward.default")
def _cdist(ctx, x1, x2, p, compute_mode=None):
    """Pairwise p-norm distances (..., P, M) x (..., R, M) -> (..., P, R), from differences."""
    r = x1.type.rank
    a = ctx.op("expand_dims", x1, axes=(r - 1,))      # (..., P, 1, M)
    b = ctx.op("expand_dims", x2, axes=(r - 2,))      # (..., 1, R, M)
    d = ctx.op("abs", ctx.op("sub", a, b))
    last = (r,)
    if p == 0:
        nz = ctx.op("ne", d, ctx.scalar(0, d.dtype))
        return ctx.op("reduce_sum", ctx.convert(nz, d.dtype), axes=last)
    if p == 1:
        return ctx.op("reduce_sum", d, axes=last)
    if p == float("inf"):
        return ctx.op("reduce_max", d, axes=last)
    if p == 2:
        return ctx.op("sqrt", ctx.op("reduce_sum", ctx.op("mul", d, d), axes=last))
    s = ctx.op("reduce_sum", ctx.op("pow", d, ctx.scalar(p, d.dtype)), axes=last)
    return ctx.op("pow", s, ctx.scalar(1.0 / p, d.dtype))


@aten_op("aten._pdist_forward.default")
def _pdist(ctx, x, p=2.0):
    """Distances between the rows i < j of x (N, M), in row-major order of the pairs."""
    import numpy as np
    n = x.shape[0]
    if not isinstance(n, int):
        ctx.unsupported(f"pdist over a symbolic number of rows {n}")
    full = ctx.reshape(_cdist(ctx, x, x, p), (n * n,))
    i, j = np.triu_indices(n, 1)
    return ctx.op("take", full, ctx.const((i * n + j).astype(np.int32)), axis=0)
