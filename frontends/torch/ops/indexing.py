"""Indexing ATen ops: embedding, index_select, gather, advanced indexing, scatter."""
from __future__ import annotations

from ....ir import Value
from ._util import axis
from ..registry import aten_op


def wrap(ctx, idx: Value, size) -> Value:
    """Negative indices counted from the end, as torch does."""
    idx = ctx.convert(idx, "i64") if idx.dtype not in ("i32", "i64") else idx
    size_v = ctx.scalar(size, idx.dtype) if isinstance(size, int) else \
        ctx.convert(ctx.imp.dim_value(size, ctx.loc), idx.dtype)
    neg = ctx.op("lt", idx, ctx.scalar(0, idx.dtype))
    return ctx.op("select", neg, ctx.op("add", idx, size_v), idx)


@aten_op("aten.embedding.default")
def _embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return ctx.op("take", weight, indices, axis=0)


@aten_op("aten.index_select.default")
def _index_select(ctx, x, dim, index):
    a = axis(dim, x.type.rank)
    return ctx.op("take", x, wrap(ctx, index, x.shape[a]), axis=a)


@aten_op("aten.gather.default")
def _gather(ctx, x, dim, index, sparse_grad=False):
    a = axis(dim, x.type.rank)
    # torch lets index be smaller than x in the other dims: cut x down to it first
    if any(i != a and d != x.shape[i] for i, d in enumerate(index.shape)):
        x = ctx.op("slice", x, start=(0,) * x.type.rank,
                   limit=tuple(x.shape[i] if i == a else index.shape[i] for i in range(x.type.rank)))
    return ctx.op("take_along_axis", x, wrap(ctx, index, x.shape[a]), axis=a)


@aten_op("aten.index.Tensor")
def _index(ctx, x, indices):
    """x[..., idx, ...]: one index tensor (any position) or several adjacent ones."""
    pos = [i for i, t in enumerate(indices) if t is not None]
    if not pos:
        return x
    for i in pos:
        if indices[i].dtype == "bool":
            ctx.unsupported("boolean-mask indexing (its result size depends on the data)")
    if pos != list(range(pos[0], pos[-1] + 1)):
        ctx.unsupported("index tensors that are not adjacent")
    if len(pos) == 1:
        i = pos[0]
        return ctx.op("take", x, wrap(ctx, indices[i], x.shape[i]), axis=i)
    if pos[0] != 0:
        ctx.unsupported("several index tensors after a leading slice")
    out_shape = ctx.out_type().shape
    bshape = out_shape[:len(out_shape) - (x.type.rank - len(pos))]
    coords = [ctx.op("expand_dims", ctx.broadcast_to(wrap(ctx, indices[i], x.shape[i]), bshape),
                     axes=(len(bshape),)) for i in pos]
    return ctx.op("gather_nd", x, ctx.op("concatenate", *coords, axis=len(bshape)))


def _coords(ctx, index: Value, dim: int, size) -> Value:
    """Full coordinates (index.shape + (rank,)) for scatter: ``index`` on ``dim``, else the
    position itself."""
    shape = tuple(index.shape)
    parts = []
    for a in range(len(shape)):
        c = wrap(ctx, index, size) if a == dim else ctx.op("iota", dtype="i64", shape=shape, axis=a)
        parts.append(ctx.op("expand_dims", ctx.convert(c, "i64"), axes=(len(shape),)))
    return ctx.op("concatenate", *parts, axis=len(shape))


def _scatter_along(ctx, x, dim, index, src, reduction):
    a = axis(dim, x.type.rank)
    if isinstance(src, Value):
        if tuple(src.shape) != tuple(index.shape):  # torch reads only src[:index.shape]
            src = ctx.op("slice", src, start=(0,) * src.type.rank, limit=tuple(index.shape))
        src = ctx.convert(src, x.dtype)
    else:
        src = ctx.broadcast_to(ctx.scalar(src, x.dtype), index.shape)
    return ctx.op("scatter_nd", x, _coords(ctx, index, a, x.shape[a]), src, reduction=reduction)


@aten_op("aten.scatter.src", "aten.scatter.value")
def _scatter(ctx, x, dim, index, src):
    return _scatter_along(ctx, x, dim, index, src, "none")


@aten_op("aten.scatter_add.default")
def _scatter_add(ctx, x, dim, index, src):
    return _scatter_along(ctx, x, dim, index, src, "add")


_REDUCE = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}


@aten_op("aten.scatter_reduce.two")
def _scatter_reduce(ctx, x, dim, index, src, reduce, include_self=True):
    if reduce not in _REDUCE:
        ctx.unsupported(f"scatter_reduce with reduce={reduce!r}")
    if not include_self:
        ctx.unsupported("scatter_reduce with include_self=False")
    return _scatter_along(ctx, x, dim, index, src, _REDUCE[reduce])


@aten_op("aten.index_put.default")
def _index_put(ctx, x, indices, values, accumulate=False):
    """x[i0, i1, ...] = values (leading index tensors), or x[mask] = scalar."""
    pos = [k for k, t in enumerate(indices) if t is not None]
    values = ctx.convert(values, x.dtype)
    if len(pos) == 1 and pos[0] == 0 and indices[0].dtype == "bool":
        mask = indices[0]
        if accumulate or values.type.rank > 0 and any(d != 1 for d in values.shape):
            ctx.unsupported("boolean-mask assignment of more than one value (its layout "
                            "depends on the data)")
        mask = ctx.reshape(mask, tuple(mask.shape) + (1,) * (x.type.rank - mask.type.rank))
        return ctx.op("select", ctx.broadcast_to(mask, x.shape),
                      ctx.broadcast_to(ctx.reshape(values, ()), x.shape), x)
    if pos != list(range(len(pos))) or any(indices[k].dtype == "bool" for k in pos):
        ctx.unsupported("index_put with index tensors that are not the leading dims")
    from ....ir.ops._rules import broadcast_shapes
    bshape = broadcast_shapes(*[indices[k].shape for k in pos])
    coords = [ctx.op("expand_dims", ctx.broadcast_to(wrap(ctx, indices[k], x.shape[k]), bshape),
                     axes=(len(bshape),)) for k in pos]
    coords = ctx.op("concatenate", *coords, axis=len(bshape))
    updates = ctx.broadcast_to(values, tuple(bshape) + tuple(x.shape[len(pos):]))
    return ctx.op("scatter_nd", x, coords, updates, reduction="add" if accumulate else "none")


@aten_op("aten.slice_scatter.default")
def _slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    a = axis(dim, x.type.rank)
    size = x.shape[a]
    start = 0 if start is None else (size + start if isinstance(start, int) and start < 0 else start)
    n = src.shape[a]
    src = ctx.convert(src, x.dtype)
    if step == 1:
        zero = ctx.scalar(0, "i64")
        starts = [ctx.scalar(start, "i64") if k == a else zero for k in range(x.type.rank)]
        return ctx.op("dynamic_update_slice", x, src, *starts)
    if not isinstance(n, int) or not isinstance(start, int):
        ctx.unsupported("a strided slice_scatter over symbolic sizes")
    import numpy as np
    idx = ctx.const(np.arange(start, start + step * n, step, dtype=np.int64))
    shape = [1] * x.type.rank
    shape[a] = n
    index = ctx.broadcast_to(ctx.reshape(idx, shape), src.shape)
    return ctx.op("scatter_nd", x, _coords(ctx, index, a, size), src, reduction="none")
