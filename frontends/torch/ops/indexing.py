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
