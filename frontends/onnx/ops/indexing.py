"""Indexing ONNX ops: Gather*, Scatter*, OneHot, ReverseSequence, MaxUnpool, Col2Im,
TensorScatter, and the data-dependent-shape ops (Compress, NonZero, Unique) when their
inputs are known at import time."""
from __future__ import annotations

import math

import numpy as np

from ....ir import numpy_dtype
from ....ir.types import is_int
from .. import folding
from ..registry import onnx_op
from ._dims import known_ints, static_dim
from ._util import norm_axis
from .shape import slice_axis


# --- index normalisation ----------------------------------------------------------------------------
def wrap_negative(ctx, idx, dims, x=None, axis: int | None = None):
    """Indices with negative entries counted from the end: idx + (idx < 0) * dims.

    ``dims`` is a dim or a vector of dims broadcast along idx's last axis; a symbolic scalar
    dim is read at run time from ``x``'s ``axis`` when they are given.
    """
    if idx.dtype.startswith("u") or idx.dtype == "bool":
        return idx
    known = ctx.known(idx)
    if known is not None and (np.asarray(known) >= 0).all():
        return idx
    dims_arr = np.asarray(dims)
    if dims_arr.dtype.kind not in "iu" and dims_arr.ndim == 0 and x is not None:
        if not is_int(idx.dtype):
            idx = ctx.convert(idx, "i64")
        size = ctx.reshape(ctx.op("shape_of", x, start=axis, end=axis + 1, dtype=idx.dtype), ())
        zero = ctx.scalar(0, idx)
        return ctx.op("select", ctx.op("lt", idx, zero), ctx.op("add", idx, size), idx)
    if dims_arr.dtype.kind not in "iu":
        ctx.unsupported(f"negative indices into symbolic dim(s) {np.atleast_1d(dims).tolist()}")
    if known is not None:
        return ctx.const(np.where(known < 0, known + dims_arr, known).astype(known.dtype))
    if not is_int(idx.dtype):
        idx = ctx.convert(idx, "i64")
    zero = ctx.scalar(0, idx)
    shift = (ctx.const(dims_arr.astype(numpy_dtype(idx.dtype))) if dims_arr.ndim
             else ctx.scalar(int(dims_arr), idx))
    return ctx.op("select", ctx.op("lt", idx, zero), ctx.op("add", idx, shift), idx)


def coordinates(ctx, idx, axis: int):
    """Full coordinates [*idx.shape, rank] for element-wise indices along ``axis``: the
    index itself there, the element's own position (an iota) on every other axis."""
    shape = tuple(idx.shape)
    cols = []
    for d in range(len(shape)):
        c = idx if d == axis else ctx.op("iota", dtype=idx.dtype, shape=shape, axis=d)
        cols.append(ctx.op("expand_dims", c, axes=(len(shape),)))
    return ctx.op("concatenate", *cols, axis=len(shape))


# --- gathers ----------------------------------------------------------------------------------------
@onnx_op("Gather")
def _gather(ctx, x, idx):
    axis = norm_axis(ctx.attr("axis", 0), x.type.rank)
    known = ctx.known(idx)
    d = x.shape[axis]
    if known is not None and known.size and isinstance(d, int):
        bad = known[(known < -d) | (known >= d)]
        if bad.size:  # onnxruntime fails at run time; XLA would clamp it: a wrong value
            ctx.unsupported(f"index {int(bad.reshape(-1)[0])} is out of range for axis {axis} "
                            f"of size {d}")
    if known is not None and known.ndim <= 1 and known.size and isinstance(d, int):
        # constant x[..., i, ...] or x[..., a:b, ...]: a slice, which passes see through
        k = np.where(known < 0, known + d, known).reshape(-1)
        if (k >= 0).all() and (k < d).all() and (np.diff(k) == 1).all():
            y = slice_axis(ctx, x, axis, int(k[0]), int(k[-1]) + 1)
            return ctx.op("squeeze", y, axes=(axis,)) if known.ndim == 0 else y
    if known is not None and known.size and not isinstance(d, int):
        # Constant indices into a symbolic axis are only valid for sizes that hold them.
        hi, lo = int(known.max()), int(known.min())
        if hi >= 0:
            ctx.require(d - (hi + 1), f"Gather index {hi} must be inside axis {axis} ({d})")
        if lo < 0:
            ctx.require(d + lo, f"Gather index {lo} must be inside axis {axis} ({d})")
    return ctx.op("take", x, wrap_negative(ctx, idx, d, x, axis), axis=axis)


def _fit_non_axis(ctx, x, like, axis):
    """x cut down to ``like``'s dims off ``axis`` (ONNX allows smaller index tensors)."""
    for d in range(x.type.rank):
        if d != axis and x.shape[d] != like.shape[d]:
            x = slice_axis(ctx, x, d, 0, static_dim(ctx, like.shape[d], "an index dim"))
    return x


@onnx_op("GatherElements", since=11)
def _gather_elements(ctx, x, idx):
    axis = norm_axis(ctx.attr("axis", 0), x.type.rank)
    idx = wrap_negative(ctx, idx, x.shape[axis])
    return ctx.op("take_along_axis", _fit_non_axis(ctx, x, idx, axis), idx, axis=axis)


def _nd_indices(ctx, x, idx, batch_dims: int):
    k = static_dim(ctx, idx.shape[-1], "the index tuple length")
    dims = [static_dim(ctx, d, "an indexed dim") for d in x.shape[batch_dims:batch_dims + k]]
    return wrap_negative(ctx, idx, np.asarray(dims, np.int64))


@onnx_op("GatherND", since=11)
def _gather_nd(ctx, x, idx):
    b = ctx.attr("batch_dims", 0)
    return ctx.op("gather_nd", x, _nd_indices(ctx, x, idx, b), batch_dims=b)


# --- scatters --------------------------------------------------------------------------------------
def _reduction(ctx):
    how = ctx.attr("reduction", "none")
    if how not in ("none", "add", "mul", "max", "min"):
        ctx.unsupported(f"reduction {how!r} (expected none, add, mul, max or min)")
    return how


@onnx_op("ScatterElements", since=11)
def _scatter_elements(ctx, x, idx, updates):
    axis = norm_axis(ctx.attr("axis", 0), x.type.rank)
    idx = wrap_negative(ctx, idx, x.shape[axis])
    return ctx.op("scatter_nd", x, coordinates(ctx, idx, axis), ctx.convert(updates, x.dtype),
                  reduction=_reduction(ctx))


@onnx_op("Scatter", since=9)
def _scatter(ctx, x, idx, updates):
    return _scatter_elements(ctx, x, idx, updates)


@onnx_op("ScatterND", since=11)
def _scatter_nd(ctx, x, idx, updates):
    return ctx.op("scatter_nd", x, _nd_indices(ctx, x, idx, 0), ctx.convert(updates, x.dtype),
                  reduction=_reduction(ctx))


@onnx_op("TensorScatter", since=24)
def _tensor_scatter(ctx, cache, update, write_indices=None):
    """Write ``update`` into ``cache`` along ``axis`` at a per-batch offset (KV caches)."""
    rank = cache.type.rank
    axis = norm_axis(ctx.attr("axis", -2), rank)
    if axis == 0:
        ctx.unsupported("TensorScatter along the batch axis")
    seq = static_dim(ctx, cache.shape[axis], "the cache length")
    shape = tuple(update.shape)
    # position along axis = write_indices[batch] + j (mod seq when circular)
    pos = ctx.op("iota", dtype="i64", shape=shape, axis=axis)
    if write_indices is not None:
        w = ctx.convert(write_indices, "i64")
        w = ctx.op("broadcast_in_dim", w, shape=shape, broadcast_dimensions=(0,))
        pos = ctx.op("add", pos, w)
    if ctx.attr("mode", "linear") == "circular":
        pos = ctx.op("rem", pos, ctx.scalar(seq, "i64"))
    return ctx.op("scatter_nd", cache, coordinates(ctx, pos, axis), ctx.convert(update, cache.dtype))


# --- one-hot, sequences ---------------------------------------------------------------------------
@onnx_op("OneHot", since=9)
def _one_hot(ctx, idx, depth, values):
    depth_v = np.asarray(ctx.require_known(depth, "OneHot's depth")).reshape(-1)
    n = int(depth_v[0])
    rank = idx.type.rank + 1
    axis = norm_axis(ctx.attr("axis", -1), rank)
    idx = ctx.convert(idx, "i64")  # float indices truncate, as the reference does
    idx = wrap_negative(ctx, idx, n)
    shape = list(idx.shape)
    shape.insert(axis, n)
    pos = ctx.op("iota", dtype="i64", shape=tuple(shape), axis=axis)
    hot = ctx.op("eq", ctx.op("expand_dims", idx, axes=(axis,)), pos)
    known = ctx.known(values)
    if known is not None:
        known = np.asarray(known).reshape(-1)
        off, on = ctx.scalar(known[0], values), ctx.scalar(known[1], values)
    else:
        flat = ctx.reshape(values, (2,))
        off = ctx.reshape(slice_axis(ctx, flat, 0, 0, 1), ())
        on = ctx.reshape(slice_axis(ctx, flat, 0, 1, 2), ())
    return ctx.op("select", hot, on, off)


@onnx_op("ReverseSequence", since=10)
def _reverse_sequence(ctx, x, lens):
    t_axis, b_axis = ctx.attr("time_axis", 0), ctx.attr("batch_axis", 1)
    # source time index: len-1-i for i < len, else i
    lens = ctx.convert(lens, "i64")
    order = (t_axis, b_axis) if t_axis < b_axis else (b_axis, t_axis)
    shape2 = tuple(x.shape[a] for a in order)
    i = ctx.op("iota", dtype="i64", shape=shape2, axis=order.index(t_axis))
    n = ctx.op("broadcast_in_dim", lens, shape=shape2, broadcast_dimensions=(order.index(b_axis),))
    rev = ctx.op("sub", ctx.op("sub", n, ctx.scalar(1, "i64")), i)
    src = ctx.op("select", ctx.op("lt", i, n), rev, i)
    src = ctx.op("broadcast_in_dim", src, shape=tuple(x.shape), broadcast_dimensions=order)
    return ctx.op("take_along_axis", x, src, axis=t_axis)


# --- unpooling and col2im ---------------------------------------------------------------------------
@onnx_op("MaxUnpool", since=9)
def _max_unpool(ctx, x, idx, output_shape=None):
    kernel = ctx.attr("kernel_shape")
    nsp = len(kernel)
    strides = ctx.attr("strides", None) or (1,) * nsp
    pads = ctx.attr("pads", None) or (0,) * (2 * nsp)
    dims = [static_dim(ctx, d, "MaxUnpool's input dims") for d in x.shape]
    inferred = dims[:2] + [(dims[2 + i] - 1) * strides[i] - pads[i] - pads[nsp + i] + kernel[i]
                           for i in range(nsp)]
    # indices address the inferred output, flattened; a bigger output_shape pads it with zeros
    total = math.prod(inferred)
    flat = ctx.op("constant", value=0, dtype=x.dtype, shape=(total,))
    where = ctx.reshape(ctx.convert(idx, "i64"), (math.prod(dims), 1))
    y = ctx.op("scatter_nd", flat, where, ctx.reshape(x, (math.prod(dims),)))
    y = ctx.reshape(y, tuple(inferred))
    if output_shape is not None:
        want = known_ints(ctx, output_shape, "MaxUnpool's output_shape")
        if len(want) != len(inferred) or any(w < i for w, i in zip(want, inferred)):
            ctx.unsupported(f"output_shape {list(want)} is smaller than the unpooled {inferred}")
        y = ctx.op("pad", y, ctx.scalar(0, x), low=(0,) * len(want),
                   high=tuple(w - i for w, i in zip(want, inferred)))
    return y


@onnx_op("Col2Im", since=18)
def _col2im(ctx, x, image_shape, block_shape):
    image = known_ints(ctx, image_shape, "Col2Im's image_shape")
    block = known_ints(ctx, block_shape, "Col2Im's block_shape")
    nsp = len(image)
    dil = ctx.attr("dilations", None) or (1,) * nsp
    strides = ctx.attr("strides", None) or (1,) * nsp
    pads = ctx.attr("pads", None) or (0,) * (2 * nsp)
    n, ck, length = x.shape
    k = math.prod(block)
    c = static_dim(ctx, ck, "Col2Im's channel dim") // k
    blocks = [(image[i] + pads[i] + pads[nsp + i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1
              for i in range(nsp)]
    if math.prod(blocks) != length:
        ctx.unsupported(f"{length} columns, but the image and block shapes give {math.prod(blocks)}")
    # where column (kernel offset o, block l) lands in the flat image; off-image: numel (dropped)
    offs = np.stack(np.meshgrid(*[np.arange(b) for b in block], indexing="ij"), -1).reshape(k, 1, nsp)
    locs = np.stack(np.meshgrid(*[np.arange(b) for b in blocks], indexing="ij"), -1).reshape(1, -1, nsp)
    pos = locs * np.asarray(strides) + offs * np.asarray(dil) - np.asarray(pads[:nsp])
    inside = np.all((pos >= 0) & (pos < np.asarray(image)), axis=-1)
    numel = math.prod(image)
    flat = np.where(inside, np.ravel_multi_index(tuple(np.moveaxis(np.clip(pos, 0, None), -1, 0)),
                                                 image, mode="clip"), numel)
    cols = ctx.op("transpose", ctx.reshape(x, (n, c, k, length)), permutation=(2, 3, 0, 1))
    zeros = ctx.op("constant", value=0, dtype=x.dtype, shape=(numel, n, c))
    y = ctx.op("scatter_nd", zeros, ctx.const(flat[..., None].astype(np.int64)), cols, reduction="add")
    y = ctx.op("transpose", y, permutation=(1, 2, 0))
    return ctx.reshape(y, (n, c) + tuple(image))


# --- data-dependent output shapes: only with known inputs -------------------------------------------
@onnx_op("Compress", since=9)
def _compress(ctx, x, cond):
    keep = np.asarray(ctx.require_known(cond, "Compress's condition")).reshape(-1).astype(bool)
    axis = ctx.attr("axis", None)
    if axis is None:
        if not x.type.is_static:
            ctx.unsupported(f"Compress without axis of a symbolic shape {x.type}")
        x, axis = ctx.reshape(x, (x.type.numel(),)), 0
    axis = norm_axis(axis, x.type.rank)
    d = static_dim(ctx, x.shape[axis], "the compressed dim")
    picked = np.nonzero(keep[:d])[0].astype(np.int64)
    return ctx.op("take", x, ctx.const(picked), axis=axis)


def _evaluate_known(ctx, *inputs):
    """Outputs of this node computed now by the reference (all inputs must be known)."""
    arrays = [None if v is None else ctx.require_known(v, f"input {i} of {ctx.op_type}")
              for i, v in enumerate(inputs)]
    outs = folding.evaluate(ctx.node, ctx.opset, arrays)
    if outs is None:
        ctx.unsupported(f"{ctx.op_type} could not be evaluated at import time")
    return [ctx.const(o) for o in outs]


@onnx_op("NonZero", since=9)
def _non_zero(ctx, x):
    return _evaluate_known(ctx, x)


@onnx_op("Unique", since=11)
def _unique(ctx, x):
    return _evaluate_known(ctx, x)
