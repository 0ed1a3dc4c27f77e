"""Resize and Upsample as separable per-axis maps computed at import time.

Every Resize mode is linear in the input and acts on each axis independently, so an axis
of length ``n`` resized to ``m`` is an ``m x n`` weight matrix: one-hot rows for nearest
(emitted as a ``take`` with constant indices, exact for every dtype), interpolation weights
for linear and cubic (a ``dot_general`` with the matrix as a param). The weights follow the
ONNX reference implementation step by step: coordinate transform, neighbour window, kernel
coefficients (antialiased or not), exclude_outside, edge clamping.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ....ir import numpy_dtype
from ....ir.types import dims_equal, is_float
from ..registry import onnx_op
from ._dims import dim_count, shape_dims
from ._util import norm_axis


# --- per-axis weights --------------------------------------------------------------------------
def _nearest(mode: str):
    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if ratio == 1.0 or mode == "ceil":
            return np.array([0.0, 1.0])
        if mode == "round_prefer_floor":
            return np.array([ratio <= 0.5, ratio > 0.5], float)
        if mode == "round_prefer_ceil":
            return np.array([ratio < 0.5, ratio >= 0.5], float)
        if mode == "floor":
            return np.array([1.0, 0.0])
        raise ValueError(mode)
    return coeffs


def _linear(antialias: bool):
    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([1 - ratio, ratio])
        scale = min(scale, 1.0)
        start = int(np.floor(-1 / scale) + 1)
        args = (np.arange(start, 2 - start) - ratio) * scale
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()
    return coeffs


def _cubic(a: float, antialias: bool):
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return 0.0

    def coeffs(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([kernel(ratio + 1), kernel(ratio), kernel(1 - ratio), kernel(2 - ratio)])
        s = min(scale, 1.0)
        start = int(np.floor(-2 / s) + 1)
        c = np.array([kernel(s * (i - ratio)) for i in range(start, 2 - start)])
        return c / c.sum()
    return coeffs


def source_coords(mode: str, n_in: int, n_out: int, scale: float, roi):
    """Input coordinate of every output position; also which ones fall outside (crop mode)."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in  # the unrounded output length
    outside = None
    if mode == "align_corners":
        x = np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            x = np.full(n_out, (end - start) * (n_in - 1) / 2)
        else:
            x = y * (end - start) * (n_in - 1) / (width - 1)
        x = x + start * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    elif mode == "pytorch_half_pixel":
        x = np.zeros(n_out) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")
    return x, outside


_MAX_AXIS_MATRIX = 1 << 26  # entries (512 MiB of f64): larger resizes are refused, not allocated


def axis_weights(n_in: int, n_out: int, scale: float, coeffs, mode: str, roi=None,
                 exclude_outside: bool = False):
    """``(W, outside)``: the [n_out, n_in] matrix of one axis and the extrapolated rows."""
    x, outside = source_coords(mode, n_in, n_out, scale, roi)
    w = np.zeros((n_out, n_in))
    if n_out == 0:
        return w, outside
    base = np.floor(x)
    ratios = np.where(x == base, 1.0, x - base)  # in (0, 1]: the left pixel is preferred
    c = np.stack([coeffs(float(r), scale) for r in ratios])
    n = c.shape[1]
    # the n input positions nearest to x (ties to the smaller), as the reference picks them
    pad = int(math.ceil(n / 2))
    p = np.floor(x + pad)
    frac = x + pad - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    taps = (p + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        c = np.where((taps < 0) | (taps >= n_in), 0.0, c)
        total = c.sum(-1, keepdims=True)
        c = c / np.where(total == 0, 1.0, total)
    rows = np.repeat(np.arange(n_out), n)
    np.add.at(w, (rows, np.clip(taps, 0, n_in - 1).reshape(-1)), c.reshape(-1))
    return w, outside


# --- the plan: output size, scale and roi of each axis --------------------------------------------
def resize_plan(in_shape, axes, scales=None, sizes=None, roi=None, policy: str = "stretch"):
    """[(axis, n_in, n_out, scale, (roi start, roi end))] for the axes resized."""
    k = len(axes)
    if any(not isinstance(in_shape[a], int) for a in axes):
        return _symbolic_plan(in_shape, axes, scales, sizes, roi)
    if sizes is not None:
        sizes = [int(s) for s in sizes]
        scales = [sizes[i] / in_shape[a] for i, a in enumerate(axes)]
        if policy != "stretch":
            s = min(scales) if policy == "not_larger" else max(scales)
            scales = [s] * k
            sizes = [int(s * in_shape[a] + 0.5) for a in axes]
    else:
        scales = [float(s) for s in scales]
        sizes = [int(s * in_shape[a]) for s, a in zip(scales, axes)]
    plan = []
    for i, a in enumerate(axes):
        r = (0.0, 1.0) if roi is None else (float(roi[i]), float(roi[k + i]))
        if math.isclose(scales[i], 1.0) and sizes[i] == in_shape[a] and \
                math.isclose(r[0], 0.0) and math.isclose(r[1], 1.0):
            continue  # identity along this axis
        plan.append((a, in_shape[a], sizes[i], scales[i], r))
    return plan


def _scaled_dim(d, scale: float):
    """floor(d * scale) for a symbolic d: the scale as the simplest fraction equal in float32."""
    f = Fraction(float(scale)).limit_denominator(1024)
    if np.float32(float(f)) != np.float32(scale):
        f = Fraction(float(scale))
    return (d * f.numerator) // f.denominator


def _symbolic_plan(in_shape, axes, scales, sizes, roi):
    if sizes is not None or roi is not None:
        raise ValueError(f"Resize of symbolic dims {[str(in_shape[a]) for a in axes]} needs "
                         "scales (sizes and roi give a run-time scale)")
    plan = []
    for a, sc in zip(axes, scales):
        sc = float(sc)
        if math.isclose(sc, 1.0):
            continue
        n_in = in_shape[a]
        plan.append((a, n_in, _scaled_dim(n_in, sc) if not isinstance(n_in, int) else int(sc * n_in),
                     sc, (0.0, 1.0)))
    return plan


def _symbolic_axis(ctx, x, a, n_out, scale, mode, nearest_mode, ctm):
    """Resize one symbolic axis: source coordinates from iota at run time, then a take
    (nearest) or a two-tap blend (linear), edges clamped as the reference does."""
    n_in = x.shape[a]
    y = ctx.op("iota", dtype="f32", shape=(n_out,), axis=0)
    half = ctx.scalar(0.5, "f32")
    n = dim_count(ctx, x, [a], "f32")
    last = ctx.op("sub", n, ctx.scalar(1.0, "f32"))
    if isinstance(scale, tuple):  # ("sizes", the sizes value, entry): scale = size / n_in
        _, sizes, i = scale
        width = ctx.convert(ctx.reshape(ctx.op("slice", sizes, start=(i,), limit=(i + 1,)), ()), "f32")
        inv = ctx.op("div", n, width)
    else:
        width = ctx.op("mul", n, ctx.scalar(scale, "f32"))
        inv = ctx.scalar(1.0 / scale, "f32")
    if ctm == "asymmetric":
        src = ctx.op("mul", y, inv)
    elif ctm == "tf_half_pixel_for_nn":
        src = ctx.op("mul", ctx.op("add", y, half), inv)
    elif ctm == "half_pixel":
        src = ctx.op("sub", ctx.op("mul", ctx.op("add", y, half), inv), half)
    elif ctm == "align_corners":
        den = ctx.op("max", ctx.op("sub", width, ctx.scalar(1.0, "f32")), ctx.scalar(1e-30, "f32"))
        src = ctx.op("div", ctx.op("mul", y, last), den)
    else:
        ctx.unsupported(f"coordinate_transformation_mode {ctm!r} over symbolic dim {n_in}")

    def clamp_index(v):
        v = ctx.op("min", ctx.op("max", v, ctx.scalar(0.0, "f32")), last)
        return ctx.convert(v, "i32")
    if mode == "nearest":
        rounded = {"round_prefer_floor": lambda v: ctx.op("ceil", ctx.op("sub", v, half)),
                   "round_prefer_ceil": lambda v: ctx.op("floor", ctx.op("add", v, half)),
                   "floor": lambda v: ctx.op("floor", v),
                   "ceil": lambda v: ctx.op("ceil", v)}[nearest_mode](src)
        return ctx.op("take", x, clamp_index(rounded), axis=a)
    if mode not in ("linear", "bilinear", "trilinear") or not is_float(x.dtype):
        ctx.unsupported(f"Resize mode {mode!r} of {x.type} over symbolic dim {n_in} (nearest, "
                        "and linear of floats, are supported)")
    base = ctx.op("floor", src)
    r = ctx.convert(ctx.op("sub", src, base), x.dtype)
    left = ctx.op("take", x, clamp_index(base), axis=a)
    right = ctx.op("take", x, clamp_index(ctx.op("add", base, ctx.scalar(1.0, "f32"))), axis=a)
    shape = [1] * x.type.rank
    shape[a] = n_out
    r = ctx.reshape(r, tuple(shape))
    return ctx.op("add", left, ctx.op("mul", ctx.op("sub", right, left), r))


def emit_resize(ctx, x, plan, mode: str, coeffs, ctm: str, exclude_outside=False,
                extrapolation=0.0, nearest_mode: str = "round_prefer_floor"):
    """The IR of a planned resize: takes for nearest, dot_generals for the rest."""
    symbolic = [p for p in plan if not isinstance(p[1], int) or not isinstance(p[2], int)
                 or isinstance(p[3], tuple)]
    if symbolic:
        if exclude_outside and mode != "nearest":
            ctx.unsupported("exclude_outside over a symbolic dim")
        for a, _, n_out, scale, _ in symbolic:
            x = _symbolic_axis(ctx, x, a, n_out, scale, mode, nearest_mode, ctm)
        plan = [p for p in plan if p not in symbolic]
    if not plan:
        return x
    for a, n_in, n_out, _, _ in plan:  # each axis is a dense [n_out, n_in] matrix, built now
        if n_in * n_out > _MAX_AXIS_MATRIX:
            ctx.unsupported(f"resizing axis {a} from {n_in} to {n_out} needs a "
                            f"{n_out}x{n_in} interpolation matrix, over {_MAX_AXIS_MATRIX} entries")
    masks = []
    if mode == "nearest":
        for a, n_in, n_out, scale, roi in plan:
            w, outside = axis_weights(n_in, n_out, scale, coeffs, ctm, roi, exclude_outside)
            x = ctx.op("take", x, ctx.const(w.argmax(1).astype(np.int32)), axis=a)
            masks.append((a, outside))
        return _extrapolate(ctx, x, masks, extrapolation)
    dtype = x.dtype
    work = dtype if dtype in ("f32", "f64") else "f64" if dtype in ("i64", "u64", "i32", "u32") else "f32"
    y = ctx.convert(x, work)
    rank = x.type.rank
    order = list(range(rank))  # order[i]: which original axis is at position i of y
    for a, n_in, n_out, scale, roi in sorted(plan):
        w, outside = axis_weights(n_in, n_out, scale, coeffs, ctm, roi, exclude_outside)
        pos = order.index(a)
        # contracting moves the resized axis last; resizing axes in increasing order
        # leaves NCHW-style layouts in order without any transpose
        y = ctx.op("dot_general", y, ctx.const(w.astype(numpy_dtype(work))),
                   contracting_dims=((pos,), (1,)))
        order = order[:pos] + order[pos + 1:] + [a]
        masks.append((a, outside))
    if order != list(range(rank)):
        y = ctx.op("transpose", y, permutation=tuple(order.index(i) for i in range(rank)))
    y = _extrapolate(ctx, y, masks, extrapolation)
    if is_float(dtype):
        return ctx.convert(y, dtype)
    # integer images: round half to even and saturate, as the reference's saturate_cast does
    info = np.iinfo(numpy_dtype(dtype))
    y = ctx.op("round", y, method="half_to_even")
    y = ctx.op("min", ctx.op("max", y, ctx.scalar(info.min, y)), ctx.scalar(info.max, y))
    return ctx.convert(y, dtype)


def _extrapolate(ctx, y, masks, value):
    """Positions any axis maps outside the input (tf_crop_and_resize) get ``value``."""
    masks = [(a, m) for a, m in masks if m is not None and m.any()]
    if not masks:
        return y
    shape = [1] * y.type.rank
    full = np.zeros(shape, bool)
    for a, m in masks:
        s = [1] * y.type.rank
        s[a] = m.size
        full = full | m.reshape(s)
    return ctx.op("select", ctx.const(full), ctx.scalar(value, y), y)


# --- converters -------------------------------------------------------------------------------
def _known_floats(ctx, v, what):
    if v is None:
        return None
    arr = np.asarray(ctx.require_known(v, what)).reshape(-1)
    return None if arr.size == 0 else arr


def _coeffs(ctx, mode: str, nearest_mode: str, antialias: bool):
    if mode == "nearest":
        if nearest_mode not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            ctx.unsupported(f"nearest_mode {nearest_mode!r}")
        return _nearest(nearest_mode)
    if mode in ("linear", "bilinear", "trilinear"):
        return _linear(antialias)
    if mode in ("cubic", "bicubic"):
        return _cubic(ctx.attr("cubic_coeff_a", -0.75), antialias)
    ctx.unsupported(f"mode {mode!r} (expected nearest, linear or cubic)")


@onnx_op("Resize", since=11)
def _resize(ctx, x, roi=None, scales=None, sizes=None):
    rank = x.type.rank
    axes = ctx.attr("axes", None)
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    scales = _known_floats(ctx, scales, "Resize's scales")
    size_dims = None
    if sizes is not None and scales is None and ctx.known(sizes) is None:
        size_dims = shape_dims(ctx, sizes)  # sizes read off other tensors' shapes: follow them
    if size_dims is not None:
        return _resize_to_dims(ctx, x, axes, sizes, size_dims)
    sizes = _known_floats(ctx, sizes, "Resize's sizes")
    if (scales is None) == (sizes is None):
        ctx.unsupported("exactly one of scales and sizes must be given")
    if len(scales if scales is not None else sizes) != len(axes):
        ctx.unsupported(f"scales/sizes need {len(axes)} entries (one per axis)")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
    roi_v = _known_floats(ctx, roi, "Resize's roi") if ctm == "tf_crop_and_resize" else None
    if ctm == "tf_crop_and_resize" and (roi_v is None or len(roi_v) != 2 * len(axes)):
        ctx.unsupported(f"tf_crop_and_resize needs a roi of {2 * len(axes)} values")
    shape = list(x.shape)
    mode = ctx.attr("mode", "nearest")
    antialias = bool(ctx.attr("antialias", 0)) and mode != "nearest"
    try:
        plan = resize_plan(shape, axes, scales, sizes, roi_v,
                           ctx.attr("keep_aspect_ratio_policy", "stretch"))
    except ValueError as e:
        ctx.unsupported(str(e))
    if antialias and any(not isinstance(p[1], int) for p in plan):
        ctx.unsupported("antialiased Resize over a symbolic dim")
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    coeffs = _coeffs(ctx, mode, nearest_mode, antialias)
    try:
        return emit_resize(ctx, x, plan, mode, coeffs, ctm, bool(ctx.attr("exclude_outside", 0)),
                           ctx.attr("extrapolation_value", 0.0), nearest_mode)
    except ValueError as e:
        ctx.unsupported(str(e))


def _resize_to_dims(ctx, x, axes, sizes, dims):
    """Resize to sizes known only symbolically (``Shape(y)[2:]``): each axis maps with the
    run-time scale sizes[i] / n_in."""
    if len(dims) != len(axes):
        ctx.unsupported(f"sizes need {len(axes)} entries (one per axis)")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch" or ctm == "tf_crop_and_resize":
        ctx.unsupported("symbolic sizes with keep_aspect_ratio_policy or tf_crop_and_resize")
    if ctx.attr("antialias", 0) and ctx.attr("mode", "nearest") != "nearest":
        ctx.unsupported("antialiased Resize to symbolic sizes")
    plan = [(a, x.shape[a], d, ("sizes", sizes, i), (0.0, 1.0))
            for i, (a, d) in enumerate(zip(axes, dims)) if not dims_equal(d, x.shape[a])]
    mode = ctx.attr("mode", "nearest")
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    return emit_resize(ctx, x, plan, mode, None, ctm, bool(ctx.attr("exclude_outside", 0)),
                       nearest_mode=nearest_mode)


def _legacy(ctx, x, scales):
    """Resize-10 and Upsample: scales only, asymmetric coordinates, floor for nearest."""
    if len(scales) != x.type.rank:
        ctx.unsupported(f"scales {list(scales)} need one entry per dim of {x.type}")
    try:
        plan = resize_plan(list(x.shape), list(range(x.type.rank)), scales)
    except ValueError as e:
        ctx.unsupported(str(e))
    mode = ctx.attr("mode", "nearest")
    return emit_resize(ctx, x, plan, "nearest" if mode == "nearest" else "linear",
                       _coeffs(ctx, mode, "floor", False), "asymmetric", nearest_mode="floor")


@onnx_op("Resize", since=10)
def _resize_v10(ctx, x, scales):
    return _legacy(ctx, x, _known_floats(ctx, scales, "Resize's scales"))


@onnx_op("Upsample", since=7)
def _upsample_v7(ctx, x):
    return _legacy(ctx, x, np.asarray(ctx.attr("scales"), np.float32))


@onnx_op("Upsample", since=9)
def _upsample(ctx, x, scales):
    return _legacy(ctx, x, _known_floats(ctx, scales, "Upsample's scales"))
