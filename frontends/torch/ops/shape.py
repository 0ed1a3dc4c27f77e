"""Shape ATen ops: views, permutes, expand, cat/split, slicing, padding, flips, copies."""
from __future__ import annotations

from ....ir import Value
from ....ir.dims import DimExpr, dim_ge
from ._util import axis
from ..registry import aten_op

_BIG = 2 ** 62  # torch writes "to the end" as a huge int (9223372036854775807)


@aten_op("aten.view.default", "aten.squeeze.dims", "aten.unsqueeze.default")
def _reshape(ctx, x, *args):
    # The target shape is the one torch computed (with -1 and symbolic sizes resolved).
    return ctx.reshape(x, ctx.out_type().shape)


@aten_op("aten.clone.default", "aten.alias.default", "aten.copy.default")
def _identity(ctx, x, *args, **kwargs):
    if ctx.target == "aten.copy.default":  # copy(self, src): src broadcast to self
        src = ctx.convert(args[0], x.dtype)
        return ctx.broadcast_to(src, x.shape)
    return x


@aten_op("aten._to_copy.default")
def _to_copy(ctx, x, *args, **kwargs):
    return ctx.convert(x, ctx.out_dtype)


@aten_op("aten.permute.default")
def _permute(ctx, x, dims):
    rank = x.type.rank
    perm = tuple(axis(d, rank) for d in dims)
    return x if perm == tuple(range(rank)) else ctx.op("transpose", x, permutation=perm)


@aten_op("aten.expand.default")
def _expand(ctx, x, size, implicit=False):
    return ctx.broadcast_to(x, ctx.out_type().shape)


@aten_op("aten.cat.default")
def _cat(ctx, tensors, dim=0):
    out = ctx.out_dtype
    # torch skips 1-D empty tensors in a cat of higher-rank tensors (legacy behaviour)
    parts = [ctx.convert(t, out) for t in tensors if not (t.type.rank == 1 and t.shape[0] == 0)]
    rank = ctx.out_type().rank
    if len(parts) == 1:
        return parts[0]
    return ctx.op("concatenate", *parts, axis=axis(dim, rank))


def _slice_dim(ctx, x: Value, a: int, start, end, step=1) -> Value:
    size = x.shape[a]
    start = 0 if start is None else start
    end = size if end is None or (isinstance(end, int) and end >= _BIG) else end
    start, end = _clip(start, size), _clip(end, size)
    if isinstance(start, int) and isinstance(end, int) and end < start:
        end = start
    if start == 0 and end == size and step == 1:
        return x
    rank = x.type.rank
    begin = tuple(start if i == a else 0 for i in range(rank))
    limit = tuple(end if i == a else d for i, d in enumerate(x.shape))
    strides = tuple(step if i == a else 1 for i in range(rank)) if step != 1 else None
    return ctx.op("slice", x, start=begin, limit=limit, strides=strides)


def _clip(i, size):
    """A slice bound in [0, size] (negative counts from the end), as torch clamps it."""
    if isinstance(i, int) and i < 0:
        i = size + i
        return 0 if dim_ge(i, 0) is False else i
    if isinstance(i, int) and isinstance(size, int):
        return min(i, size)
    if isinstance(i, int) and isinstance(size, DimExpr) and dim_ge(size, i) is not True:
        return i  # torch checked it fits for the traced sizes and guarded the range
    return i


@aten_op("aten.slice.Tensor")
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    return _slice_dim(ctx, x, axis(dim, x.type.rank), start, end, step)


@aten_op("aten.select.int")
def _select(ctx, x, dim, index):
    a = axis(dim, x.type.rank)
    if isinstance(index, int) and index < 0:
        index = x.shape[a] + index
    y = _slice_dim(ctx, x, a, index, index + 1)
    return ctx.op("squeeze", y, axes=(a,))


@aten_op("aten.split_with_sizes.default")
def _split_with_sizes(ctx, x, split_sizes, dim=0):
    a = axis(dim, x.type.rank)
    outs, at = [], 0
    for s in split_sizes:
        outs.append(_slice_dim(ctx, x, a, at, at + s))
        at = at + s
    return tuple(outs)


@aten_op("aten.constant_pad_nd.default")
def _pad(ctx, x, pad, value=0):
    rank = x.type.rank
    low, high = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):  # pairs from the last dim backwards
        low[rank - 1 - i], high[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return ctx.op("pad", x, ctx.scalar(value, x.dtype), low=tuple(low), high=tuple(high))


@aten_op("aten.flip.default")
def _flip(ctx, x, dims):
    return ctx.op("rev", x, axes=tuple(sorted({axis(d, x.type.rank) for d in dims})))


@aten_op("aten.repeat.default")
def _repeat(ctx, x, repeats):
    rank = len(repeats)
    x = ctx.reshape(x, (1,) * (rank - x.type.rank) + tuple(x.shape))
    inter = []
    for r, d in zip(repeats, x.shape):
        inter += [1, d]
    y = ctx.reshape(x, inter)
    full = []
    for r, d in zip(repeats, x.shape):
        full += [r, d]
    y = ctx.broadcast_to(y, full)
    return ctx.reshape(y, ctx.out_type().shape)




@aten_op("aten.diagonal.default")
def _diagonal(ctx, x, offset=0, dim1=0, dim2=1):
    import numpy as np
    rank = x.type.rank
    a, b = axis(dim1, rank), axis(dim2, rank)
    n1, n2 = x.shape[a], x.shape[b]
    if not (isinstance(n1, int) and isinstance(n2, int)):
        ctx.unsupported(f"diagonal of symbolic dims ({n1}, {n2})")
    rows = np.arange(max(-offset, 0), n1)
    cols = rows + offset
    keep = (cols >= 0) & (cols < n2)
    flat = (rows[keep] * n2 + cols[keep]).astype(np.int32)
    rest = [k for k in range(rank) if k not in (a, b)]
    y = _permute(ctx, x, rest + [a, b])
    y = ctx.reshape(y, tuple(x.shape[k] for k in rest) + (n1 * n2,))
    return ctx.op("take", y, ctx.const(flat), axis=len(rest))
