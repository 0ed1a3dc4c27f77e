"""Shape ONNX ops: Reshape, Transpose, (Un)Squeeze, Flatten, Concat, Split, Slice, Expand,
Tile, Pad, DepthToSpace/SpaceToDepth, Trilu, EyeLike, ConstantOfShape, Range, Identity."""
from __future__ import annotations

import math

import numpy as np

from ....ir import dtype_name
from ....ir.types import dim_mul, dims_equal, is_int, shape_numel
from ..registry import onnx_op
from ._dims import INT_MAX, known_ints, shape_dims, static_dim, target_dims
from ._util import broadcast_shapes, norm_axis

_MAX_LITERAL = 1 << 22  # elements: a bigger literal is computed at run time instead of stored


# --- helpers ------------------------------------------------------------------------------------
def axes_of(ctx, v, since: int, rank: int, what: str = "axes"):
    """The ``axes`` of a node: an attribute before opset ``since``, an input from it on
    (None when absent), normalised to non-negative axes of ``rank``."""
    if ctx.opset < since:
        axes = ctx.attr("axes", None)
    else:
        axes = None if v is None else known_ints(ctx, v, what)
    if axes is None:
        return None
    axes = tuple(axes) if isinstance(axes, tuple) else (axes,)
    for a in axes:
        if not -rank <= a < max(rank, 1):
            ctx.unsupported(f"{what} {a} is out of range for rank {rank}")
    return tuple(norm_axis(a, rank) for a in axes)


# --- reshapes -----------------------------------------------------------------------------------
def _infer_minus_one(ctx, in_shape, out):
    """The dim standing for -1: numel(in) / product of the others (symbols cancelled)."""
    rest = list(in_shape)
    den = 1
    for d in out:
        if d == -1:
            continue
        if isinstance(d, str):
            match = next((i for i, r in enumerate(rest) if isinstance(r, str) and dims_equal(r, d)), None)
            if match is None:
                ctx.unsupported(f"cannot infer -1 in Reshape to {out} from input shape {in_shape}")
            rest.pop(match)
        else:
            den *= d
    num = math.prod(d for d in rest if isinstance(d, int))
    syms = [d for d in rest if isinstance(d, str)]
    if den == 0:
        ctx.unsupported(f"Reshape to {out}: -1 is ambiguous next to a 0-sized dim")
    if num % den == 0:
        return shape_numel(syms + [num // den])
    if not syms:
        ctx.unsupported(f"Reshape: input shape {in_shape} does not fit {out}")
    return f"({shape_numel(syms + [num])})//{den}"


def reshape_dims(ctx, x, shape, allowzero: bool = False):
    """ONNX Reshape's target: 0 copies the input dim (unless allowzero), -1 is inferred."""
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, str):
            out.append(d)
        elif d == 0 and not allowzero:
            if i >= x.type.rank:
                ctx.unsupported(f"Reshape: 0 at position {i} but the input has rank {x.type.rank}")
            out.append(x.shape[i])
        elif d < -1:
            ctx.unsupported(f"Reshape: invalid dim {d} in target shape {list(shape)}")
        else:
            out.append(d)
    if out.count(-1) > 1:
        ctx.unsupported(f"Reshape: more than one -1 in target shape {list(shape)}")
    if -1 in out:
        out[out.index(-1)] = _infer_minus_one(ctx, x.shape, out)
    return tuple(out)


@onnx_op("Reshape")
def _reshape_v1(ctx, x):
    return ctx.reshape(x, reshape_dims(ctx, x, ctx.attr("shape")))


@onnx_op("Reshape", since=5)
def _reshape(ctx, x, shape):
    dims = target_dims(ctx, shape, "Reshape's shape")
    return ctx.reshape(x, reshape_dims(ctx, x, dims, bool(ctx.attr("allowzero", 0))))


@onnx_op("Flatten")
def _flatten(ctx, x):
    rank = x.type.rank
    axis = ctx.attr("axis", 1)
    if not -rank <= axis <= rank:
        ctx.unsupported(f"axis {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    return ctx.reshape(x, (shape_numel(x.shape[:axis]), shape_numel(x.shape[axis:])))


@onnx_op("Transpose")
def _transpose(ctx, x):
    perm = ctx.attr("perm", None)
    perm = tuple(reversed(range(x.type.rank))) if perm is None else tuple(perm)
    if perm == tuple(range(x.type.rank)):
        return x
    return ctx.op("transpose", x, permutation=perm)


def _squeeze_axes(ctx, x, axes):
    if axes is None:  # every static 1 (a symbolic dim may be 1 at run time: not squeezed)
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    for a in axes:
        if x.shape[a] != 1:
            ctx.unsupported(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return ctx.op("squeeze", x, axes=tuple(sorted(axes))) if axes else x


@onnx_op("Squeeze")
def _squeeze(ctx, x, axes=None):
    return _squeeze_axes(ctx, x, axes_of(ctx, axes, 13, x.type.rank))


@onnx_op("Unsqueeze")
def _unsqueeze(ctx, x, axes=None):
    raw = ctx.attr("axes") if ctx.opset < 13 else known_ints(ctx, axes, "Unsqueeze's axes")
    rank = x.type.rank + len(raw)
    out_axes = tuple(sorted(norm_axis(a, rank) for a in raw))
    if len(set(out_axes)) != len(out_axes) or any(not 0 <= a < rank for a in out_axes):
        ctx.unsupported(f"invalid axes {list(raw)} for output rank {rank}")
    return ctx.op("expand_dims", x, axes=out_axes) if out_axes else x


# --- joining and splitting ---------------------------------------------------------------------
@onnx_op("Concat")
def _concat(ctx, *xs):
    xs = [x for x in xs if x is not None]
    rank = xs[0].type.rank
    axis = norm_axis(ctx.attr("axis", 1), rank)
    dtype = xs[0].dtype
    xs = [ctx.convert(x, dtype) for x in xs]
    if len(xs) == 1:
        return xs[0]
    return ctx.op("concatenate", *xs, axis=axis)


def split_sizes(ctx, dim: int, parts: int, split, ceil: bool):
    """Sizes of Split's outputs: given, or ``parts`` equal pieces (the last smaller if ceil)."""
    if split is not None:
        split = list(split)
        if sum(split) != dim or len(split) != parts:
            ctx.unsupported(f"split {split} does not cut a dim of {dim} into {parts} outputs")
        return split
    if ceil:
        chunk = -(-dim // parts)
        return [min(chunk, max(dim - i * chunk, 0)) for i in range(parts)]
    if dim % parts:
        ctx.unsupported(f"cannot split a dim of {dim} into {parts} equal parts")
    return [dim // parts] * parts


def slice_axis(ctx, x, axis: int, start: int, stop: int):
    """x[..., start:stop, ...] along one axis."""
    if start == 0 and stop == x.shape[axis]:
        return x
    starts = [0] * x.type.rank
    limits = list(x.shape)
    starts[axis], limits[axis] = start, stop
    return ctx.op("slice", x, start=tuple(starts), limit=tuple(limits))


@onnx_op("Split")
def _split(ctx, x, split=None):
    rank = x.type.rank
    axis = norm_axis(ctx.attr("axis", 0), rank)
    dim = static_dim(ctx, x.shape[axis], "the split dim")
    n = ctx.num_outputs
    if ctx.opset >= 13:
        sizes = None if split is None else known_ints(ctx, split, "Split's split")
        if sizes is None and ctx.opset >= 18:
            n = ctx.attr("num_outputs", n)
        sizes = split_sizes(ctx, dim, n, sizes, ceil=ctx.opset >= 18)
    else:
        given = ctx.attr("split", None)
        if given is None and split is not None:  # opset 1 took split as a second input too
            given = known_ints(ctx, split, "Split's split")
        sizes = split_sizes(ctx, dim, n, given, ceil=False)
    outs, pos = [], 0
    for s in sizes:
        outs.append(slice_axis(ctx, x, axis, pos, pos + s))
        pos += s
    return outs


# --- slicing ---------------------------------------------------------------------------------------
def slice_value(ctx, x, starts, ends, axes=None, steps=None):
    """ONNX Slice with known bounds: clamped, negative bounds, negative steps (via rev)."""
    rank = x.type.rank
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, rank) for a in axes]
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.unsupported("starts, ends, axes and steps must have the same length")
    if len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
        ctx.unsupported(f"invalid axes {axes} for rank {rank}")
    lo, hi, stride = [0] * rank, list(x.shape), [1] * rank
    flips = []
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            ctx.unsupported("Slice step cannot be 0")
        d = x.shape[a]
        if isinstance(d, str):
            if (s == 0 or (st == 1 and s <= -INT_MAX)) and st == 1 and e >= INT_MAX // 2:
                continue  # the whole symbolic dim
            ctx.unsupported(f"Slice of symbolic dim {d!r} with bounds [{s}:{e}:{st}]")
        first, stop, step = slice(s, e, st).indices(d)
        n = len(range(first, stop, step))
        if step < 0:  # read the reversed axis forwards
            flips.append(a)
            first, step = d - 1 - first, -step
        if n == 0:
            lo[a] = hi[a] = 0
        else:
            lo[a], hi[a], stride[a] = first, first + (n - 1) * step + 1, step
    if flips:
        x = ctx.op("rev", x, axes=tuple(sorted(flips)))
    if lo == [0] * rank and hi == list(x.shape) and stride == [1] * rank:
        return x
    return ctx.op("slice", x, start=tuple(lo), limit=tuple(hi),
                  strides=None if stride == [1] * rank else tuple(stride))


@onnx_op("Slice")
def _slice_v1(ctx, x):
    starts, ends = ctx.attr("starts"), ctx.attr("ends")
    return slice_value(ctx, x, starts, ends, ctx.attr("axes", None))


@onnx_op("Slice", since=10)
def _slice(ctx, x, starts, ends, axes=None, steps=None):
    rank = x.type.rank
    axes_v = None if axes is None else known_ints(ctx, axes, "Slice's axes")
    ends_v = list(target_dims(ctx, ends, "Slice's ends"))
    for i, e in enumerate(ends_v):  # x[..., :dim] where dim is x's own symbolic dim: to the end
        a = i if axes_v is None else norm_axis(axes_v[i], rank)
        if isinstance(e, str):
            if a >= rank or not dims_equal(e, x.shape[a]):
                ctx.unsupported(f"Slice end {e!r} is not the size of axis {a} ({x.type})")
            ends_v[i] = INT_MAX
    return slice_value(ctx, x, known_ints(ctx, starts, "Slice's starts"), ends_v, axes_v,
                       None if steps is None else known_ints(ctx, steps, "Slice's steps"))


# --- broadcasting and tiling ----------------------------------------------------------------------
@onnx_op("Expand", since=8)
def _expand(ctx, x, shape):
    dims = target_dims(ctx, shape, "Expand's shape")
    return ctx.broadcast_to(x, broadcast_shapes(x.shape, dims))


def tile(ctx, x, repeats):
    """x repeated ``repeats[i]`` times along each axis (numpy.tile)."""
    if len(repeats) != x.type.rank:
        ctx.unsupported(f"repeats {list(repeats)} do not match rank {x.type.rank}")
    if all(r == 1 for r in repeats):
        return x
    # broadcast x[d0, d1] to [r0, d0, r1, d1] (only axes with r != 1 get a new dim), then merge
    shape, dims, out = [], [], []
    for d, r in zip(x.shape, repeats):
        if r != 1:
            shape.append(r)
        dims.append(len(shape))
        shape.append(d)
        out.append(dim_mul(r, d))
    y = ctx.op("broadcast_in_dim", x, shape=tuple(shape), broadcast_dimensions=tuple(dims))
    return ctx.reshape(y, out)


@onnx_op("Tile", since=6)
def _tile(ctx, x, repeats):
    return tile(ctx, x, known_ints(ctx, repeats, "Tile's repeats"))


# --- padding --------------------------------------------------------------------------------------
_NP_PAD_MODES = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def pad_value(ctx, x, lo, hi, mode: str = "constant", value=None):
    """Pad (negative amounts crop) in ONNX's modes; ``value`` is a scalar Value or None (0)."""
    if mode == "constant":
        if not any(lo) and not any(hi):
            return x
        pv = ctx.scalar(0, x) if value is None else ctx.reshape(ctx.convert(value, x.dtype), ())
        return ctx.op("pad", x, pv, low=tuple(lo), high=tuple(hi))
    if mode not in _NP_PAD_MODES:
        ctx.unsupported(f"Pad mode {mode!r} (expected constant, reflect, edge or wrap)")
    for a, (l, h) in enumerate(zip(lo, hi)):
        if l == 0 and h == 0:
            continue
        d = static_dim(ctx, x.shape[a], "a padded dim")
        if l < 0 or h < 0:  # crop first, then pad what is positive
            x = slice_axis(ctx, x, a, max(-l, 0), d - max(-h, 0))
            d, l, h = x.shape[a], max(l, 0), max(h, 0)
        if d == 0:
            ctx.unsupported(f"Pad mode {mode!r} of an empty dim")
        # the source row of every padded position, as numpy computes it
        idx = np.pad(np.arange(d), (l, h), mode=_NP_PAD_MODES[mode])
        x = ctx.op("take", x, ctx.const(idx.astype(np.int32)), axis=a)
    return x


def _pads_by_axis(ctx, pads, rank: int, axes=None):
    axes = list(range(rank)) if axes is None else axes
    n = len(axes)
    if len(pads) != 2 * n:
        ctx.unsupported(f"pads {list(pads)} need {2 * n} entries")
    lo, hi = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        lo[a], hi[a] = pads[i], pads[n + i]
    return lo, hi


@onnx_op("Pad")
def _pad_v1(ctx, x):
    pads = ctx.attr("pads", None) or ctx.attr("paddings")
    lo, hi = _pads_by_axis(ctx, pads, x.type.rank)
    value = ctx.attr("value", 0.0)
    return pad_value(ctx, x, lo, hi, ctx.attr("mode", "constant"),
                     None if value == 0 else ctx.scalar(value, x))


@onnx_op("Pad", since=11)
def _pad(ctx, x, pads, value=None, axes=None):
    rank = x.type.rank
    axes = None if axes is None else [norm_axis(a, rank) for a in known_ints(ctx, axes, "Pad's axes")]
    lo, hi = _pads_by_axis(ctx, known_ints(ctx, pads, "Pad's pads"), rank, axes)
    return pad_value(ctx, x, lo, hi, ctx.attr("mode", "constant"), value)


# --- rearrangements -------------------------------------------------------------------------------
@onnx_op("DepthToSpace")
def _depth_to_space(ctx, x):
    b = ctx.attr("blocksize")
    n, c, h, w = x.shape
    c = static_dim(ctx, c, "DepthToSpace's channel dim")
    if c % (b * b):
        ctx.unsupported(f"{c} channels are not divisible by blocksize² = {b * b}")
    if ctx.attr("mode", "DCR") == "CRD":
        y = ctx.reshape(x, (n, c // (b * b), b, b, h, w))
        perm = (0, 1, 4, 2, 5, 3)
    else:
        y = ctx.reshape(x, (n, b, b, c // (b * b), h, w))
        perm = (0, 3, 4, 1, 5, 2)
    y = ctx.op("transpose", y, permutation=perm)
    return ctx.reshape(y, (n, c // (b * b), dim_mul(h, b), dim_mul(w, b)))


@onnx_op("SpaceToDepth")
def _space_to_depth(ctx, x):
    b = ctx.attr("blocksize")
    n, c, h, w = x.shape
    h, w = static_dim(ctx, h, "SpaceToDepth's height"), static_dim(ctx, w, "SpaceToDepth's width")
    if h % b or w % b:
        ctx.unsupported(f"spatial dims {h}x{w} are not divisible by blocksize {b}")
    y = ctx.reshape(x, (n, c, h // b, b, w // b, b))
    perm = (0, 1, 3, 5, 2, 4) if ctx.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = ctx.op("transpose", y, permutation=perm)
    return ctx.reshape(y, (n, dim_mul(c, b * b), h // b, w // b))


# --- generated tensors ----------------------------------------------------------------------------
def diagonal_offset(ctx, rows, cols):
    """col - row as an i64 [rows, cols] tensor (Trilu/EyeLike masks without params)."""
    r = ctx.op("iota", dtype="i64", shape=(rows, cols), axis=0)
    c = ctx.op("iota", dtype="i64", shape=(rows, cols), axis=1)
    return ctx.op("sub", c, r)


@onnx_op("Trilu", since=14)
def _trilu(ctx, x, k=None):
    if x.type.rank < 2:
        ctx.unsupported(f"Trilu needs rank >= 2, got {x.type}")
    off = diagonal_offset(ctx, *x.shape[-2:])
    kv = ctx.scalar(0, "i64") if k is None else ctx.reshape(ctx.convert(k, "i64"), ())
    keep = ctx.op("ge" if ctx.attr("upper", 1) else "le", off, kv)
    return ctx.op("select", keep, x, ctx.scalar(0, x))


@onnx_op("EyeLike", since=9)
def _eye_like(ctx, x):
    from ..dtypes import ir_dtype
    if x.type.rank != 2:
        ctx.unsupported(f"EyeLike needs a 2-D input, got {x.type}")
    dtype = ir_dtype(ctx.attr("dtype"), "EyeLike dtype") if ctx.has_attr("dtype") else x.dtype
    on = ctx.op("eq", diagonal_offset(ctx, *x.shape), ctx.scalar(ctx.attr("k", 0), "i64"))
    return ctx.convert(on, dtype)


@onnx_op("ConstantOfShape", since=9)
def _constant_of_shape(ctx, shape):
    dims = target_dims(ctx, shape, "ConstantOfShape's shape")
    if shape.type.rank != 1 or any(isinstance(d, int) and d < 0 for d in dims):
        ctx.unsupported(f"invalid shape {list(dims)} (a 1-D tensor of sizes >= 0)")
    value = ctx.attr("value", None)
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if value.dtype.kind not in "biuf" or value.dtype.itemsize > 8:
        if not all(isinstance(d, int) for d in dims) or math.prod(dims) > _MAX_LITERAL:
            ctx.unsupported(f"a {value.dtype} constant of shape {list(dims)} (symbolic or too big)")
        return ctx.const(np.full(dims, value[0], value.dtype))
    return ctx.op("constant", value=value[0].item(), dtype=dtype_name(value.dtype), shape=dims)


@onnx_op("Range", since=11)
def _range(ctx, start, limit, delta):
    s = np.asarray(ctx.require_known(start, "Range's start")).reshape(())
    d = np.asarray(ctx.require_known(delta, "Range's delta")).reshape(())
    lim = shape_dims(ctx, limit) if is_int(limit.dtype) else None
    if lim is not None and isinstance(lim[0], str):
        if int(s) == 0 and int(d) == 1:  # arange(n) of a symbolic n
            return ctx.op("iota", dtype=start.dtype, shape=(lim[0],), axis=0)
        ctx.unsupported(f"Range up to symbolic {lim[0]!r} from {s} by {d}")
    lim = lim[0] if lim is not None else np.asarray(ctx.require_known(limit, "Range's limit")).reshape(())
    span = (float(lim) - float(s)) / float(d) if float(d) != 0 else math.inf
    if not math.isfinite(span) or span > INT_MAX:
        ctx.unsupported(f"Range from {s} to {lim} by {d} has no finite length")
    n = max(int(math.ceil(span)), 0)
    if n > _MAX_LITERAL:  # computed at run time, not stored: a Range can be a memory bomb
        i = ctx.op("iota", dtype=start.dtype, shape=(n,), axis=0)
        return ctx.op("add", ctx.op("mul", i, ctx.scalar(d, start)), ctx.scalar(s, start))
    return ctx.const((s + d * np.arange(n)).astype(s.dtype))


@onnx_op("Identity")
def _identity(ctx, x):
    return x


@onnx_op("Shape")
def _shape(ctx, x):
    rank = x.type.rank
    start, end = (ctx.attr("start", 0), ctx.attr("end", rank)) if ctx.opset >= 15 else (0, rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, start), rank)
    dims = x.shape[start:end]
    if all(isinstance(d, int) for d in dims):
        return ctx.const(np.asarray(dims, np.int64))
    return ctx.op("shape_of", x, start=start, end=end, dtype="i64")


@onnx_op("Size")
def _size(ctx, x):
    if x.type.is_static:
        return ctx.const(np.asarray(x.type.numel(), np.int64))
    dims = ctx.op("shape_of", x, dtype="i64")
    return ctx.op("reduce_prod", dims, axes=(0,))
