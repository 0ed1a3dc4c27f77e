"""Shape ONNX ops: Reshape, Transpose, (Un)Squeeze, Flatten, Concat, Split, Slice, Expand,
Tile, Pad, DepthToSpace/SpaceToDepth, Trilu, EyeLike, ConstantOfShape, Range, Identity."""
from __future__ import annotations

import math

import numpy as np

from ....ir import dtype_name
from ....ir.dims import DimExpr, dim_ge, dim_max, dim_min, exact_div
from ....ir.types import dim_mul, dims_equal, is_int, shape_numel
from ..registry import onnx_op
from ._dims import INT_MAX, dim_count, known_ints, shape_dims, static_dim, target_dims
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
    """The dim standing for -1: numel(in) / product of the others, when provably exact."""
    rest, pending = list(in_shape), []
    for d in out:
        if isinstance(d, int) and d == -1:
            continue
        match = next((i for i, r in enumerate(rest) if not isinstance(r, int) and dims_equal(r, d)), None)
        if match is not None:  # cancel equal symbolic factors first: N*H*W / (N*H) is W
            rest.pop(match)
        else:
            pending.append(d)
    num, den = shape_numel(rest), shape_numel(pending)
    if isinstance(den, int) and den == 0:
        ctx.unsupported(f"Reshape to {list(out)}: -1 is ambiguous next to a 0-sized dim")
    q = exact_div(num, den)
    if q is None:
        ctx.unsupported(f"Reshape: cannot infer -1 in {list(map(str, out))} from input shape "
                        f"[{','.join(map(str, in_shape))}]: {num} elements are not provably a "
                        f"multiple of {den}")
    return q


def reshape_dims(ctx, x, shape, allowzero: bool = False):
    """ONNX Reshape's target: 0 copies the input dim (unless allowzero), -1 is inferred."""
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, DimExpr):
            out.append(d)
        elif d == 0 and not allowzero:
            if i >= x.type.rank:
                ctx.unsupported(f"Reshape: 0 at position {i} but the input has rank {x.type.rank}")
            out.append(x.shape[i])
        elif d < -1:
            ctx.unsupported(f"Reshape: invalid dim {d} in target shape {list(shape)}")
        else:
            out.append(d)
    minus = [i for i, d in enumerate(out) if isinstance(d, int) and d == -1]
    if len(minus) > 1:
        ctx.unsupported(f"Reshape: more than one -1 in target shape {list(shape)}")
    if minus:
        out[minus[0]] = _infer_minus_one(ctx, x.shape, out)
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
        if not isinstance(d, int) or not isinstance(e, int) or not isinstance(s, int):
            lo[a], hi[a], stride[a], flip = _symbolic_bounds(ctx, d, s, e, st)
            if flip:
                flips.append(a)
            continue
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


def _clamp(ctx, b, d, what):
    """An ONNX slice bound (negative counts from the end) clamped into [0, d]."""
    if isinstance(b, int) and b >= INT_MAX // 2:
        return d
    if isinstance(b, int) and b < 0:
        return 0 if b <= -INT_MAX // 2 else dim_max(d + b, 0)
    if dim_ge(b, 0) is not True:
        ctx.unsupported(f"Slice {what} {b} of symbolic dim {d} may be negative")
    if isinstance(d, int) and dim_ge(d, b) is None:
        # A symbolic bound on a static axis (position ids cut to the sequence length): the
        # model only makes sense when it fits, so require that rather than carry min(d, b).
        ctx.require(d - b, f"Slice {what} {b} must fit in the axis of size {d}")
        return b
    return dim_min(b, d)


def _symbolic_bounds(ctx, d, s, e, st):
    """(start, limit, stride, reversed) of a slice of a symbolic dim, clamped symbolically."""
    if st < 0:
        whole = (isinstance(s, int) and (s == -1 or s >= INT_MAX // 2)
                 and isinstance(e, int) and e <= -INT_MAX // 2)
        if not whole:
            ctx.unsupported(f"Slice of symbolic dim {d} with bounds [{s}:{e}:{st}] (a negative step "
                            "is supported over the whole dim)")
        return 0, d, -st, True
    first = _clamp(ctx, s, d, "start")
    return first, dim_max(_clamp(ctx, e, d, "end"), first), st, False


@onnx_op("Slice")
def _slice_v1(ctx, x):
    starts, ends = ctx.attr("starts"), ctx.attr("ends")
    return slice_value(ctx, x, starts, ends, ctx.attr("axes", None))


@onnx_op("Slice", since=10)
def _slice(ctx, x, starts, ends, axes=None, steps=None):
    rank = x.type.rank
    axes_v = None if axes is None else known_ints(ctx, axes, "Slice's axes")
    ends_v = list(target_dims(ctx, ends, "Slice's ends"))
    starts_v = list(target_dims(ctx, starts, "Slice's starts"))
    return slice_value(ctx, x, starts_v, ends_v, axes_v,
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
    if all(isinstance(r, int) and r == 1 for r in repeats):
        return x
    # broadcast x[d0, d1] to [r0, d0, r1, d1] (only axes with r != 1 get a new dim), then merge
    shape, dims, out = [], [], []
    for d, r in zip(x.shape, repeats):
        if not isinstance(r, int) or r != 1:
            shape.append(r)
        dims.append(len(shape))
        shape.append(d)
        out.append(dim_mul(r, d))
    y = ctx.op("broadcast_in_dim", x, shape=tuple(shape), broadcast_dimensions=tuple(dims))
    return ctx.reshape(y, out)


@onnx_op("Tile", since=6)
def _tile(ctx, x, repeats):
    return tile(ctx, x, target_dims(ctx, repeats, "Tile's repeats"))


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
        if not isinstance(x.shape[a], int):
            x = _pad_symbolic(ctx, x, a, l, h, mode)
            continue
        d = x.shape[a]
        if l < 0 or h < 0:  # crop first, then pad what is positive
            x = slice_axis(ctx, x, a, max(-l, 0), d - max(-h, 0))
            d, l, h = x.shape[a], max(l, 0), max(h, 0)
        if d == 0:
            ctx.unsupported(f"Pad mode {mode!r} of an empty dim")
        # the source row of every padded position, as numpy computes it
        idx = np.pad(np.arange(d), (l, h), mode=_NP_PAD_MODES[mode])
        x = ctx.op("take", x, ctx.const(idx.astype(np.int32)), axis=a)
    return x


def _pad_symbolic(ctx, x, a, l, h, mode):
    """reflect/edge/wrap padding of a symbolic dim: source indices computed from iota at run
    time (reflect needs the dim longer than the pads, as onnxruntime does)."""
    if l < 0 or h < 0:
        x = slice_value(ctx, x, [max(-l, 0)], [-h if h < 0 else INT_MAX], [a])
        l, h = max(l, 0), max(h, 0)
    d = x.shape[a]
    j = ctx.op("sub", ctx.op("iota", dtype="i32", shape=(d + l + h,), axis=0), ctx.scalar(l, "i32"))
    n = dim_count(ctx, x, [a], "i32")
    last = ctx.op("sub", n, ctx.scalar(1, "i32"))
    if mode == "edge":
        j = ctx.op("min", ctx.op("max", j, ctx.scalar(0, "i32")), last)
    elif mode == "reflect":
        # a reflection repeats no edge element, so it needs more elements than the pad
        ctx.require(d - max(l, h) - 1, f"reflect Pad by {max(l, h)} needs axis {a} ({d}) longer")
        j = ctx.op("sub", last, ctx.op("abs", ctx.op("sub", last, ctx.op("abs", j))))
    else:  # wrap: a non-negative remainder
        j = ctx.op("rem", ctx.op("add", ctx.op("rem", j, n), n), n)
    return ctx.op("take", x, j, axis=a)


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
    if lim is not None and isinstance(lim[0], DimExpr):
        s0, d0 = int(s), int(d)
        if d0 <= 0:
            ctx.unsupported(f"Range up to symbolic {lim[0]} from {s0} by {d0} (needs a positive step)")
        n = dim_max((lim[0] - s0 + d0 - 1) // d0, 0)  # ceil((limit - start) / delta), at least 0
        y = ctx.op("iota", dtype=start.dtype, shape=(n,), axis=0)
        if d0 != 1:
            y = ctx.op("mul", y, ctx.scalar(d0, start.dtype))
        return y if s0 == 0 else ctx.op("add", y, ctx.scalar(s0, start.dtype))
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
