"""Sampling ONNX ops: GridSample (run-time coordinates), AffineGrid, RoiAlign.

GridSample computes, for every output point, the input taps it reads (1, 2 or 4 per
spatial dim) and their weights with element-wise IR, then gathers all taps with one
``take_along_axis`` over the flattened spatial dims and reduces them.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ....ir import numpy_dtype
from ..registry import onnx_op
from ._dims import known_ints, static_dim


# --- GridSample ---------------------------------------------------------------------------------
def _reflect(ctx, v, lo: float, hi: float):
    """Reflect coordinates into [lo, hi] by the nearer border, as the reference does."""
    rng = hi - lo
    if rng <= 0:  # a single pixel: everything reflects onto it
        return ctx.broadcast_to(ctx.scalar(lo, v), v.shape)

    def fold(dx, from_near, from_far):
        n = ctx.op("floor", ctx.op("div", dx, ctx.scalar(rng, v)))
        r = ctx.op("sub", dx, ctx.op("mul", n, ctx.scalar(rng, v)))
        odd = ctx.op("ne", ctx.op("rem", n, ctx.scalar(2, v)), ctx.scalar(0, v))
        return ctx.op("select", odd, from_far(r), from_near(r))

    below = fold(ctx.op("sub", ctx.scalar(lo, v), v),
                 lambda r: ctx.op("add", ctx.scalar(lo, v), r),
                 lambda r: ctx.op("sub", ctx.scalar(hi, v), r))
    above = fold(ctx.op("sub", v, ctx.scalar(hi, v)),
                 lambda r: ctx.op("sub", ctx.scalar(hi, v), r),
                 lambda r: ctx.op("add", ctx.scalar(lo, v), r))
    return ctx.op("select", ctx.op("lt", v, ctx.scalar(lo, v)), below,
                  ctx.op("select", ctx.op("gt", v, ctx.scalar(hi, v)), above, v))


def _cubic_kernel(ctx, s, a: float = -0.75):
    """Keys' cubic convolution kernel of distances ``s`` >= 0 (zero from 2 on)."""
    def poly(coeffs):  # Horner: ((c0*s + c1)*s + c2)*s + c3
        acc = ctx.scalar(coeffs[0], s)
        for c in coeffs[1:]:
            acc = ctx.op("add", ctx.op("mul", acc, s), ctx.scalar(c, s))
        return acc
    near = poly((a + 2, -(a + 3), 0.0, 1.0))   # |s| <= 1
    far = poly((a, -5 * a, 8 * a, -4 * a))      # 1 < |s| < 2
    return ctx.op("select", ctx.op("le", s, ctx.scalar(1, s)), near, far)


def _taps(ctx, v, d: int, mode: str, padding: str, lo: float, hi: float):
    """``(index, weight)`` [n, q, T] of one spatial dim: the T taps a sample at ``v`` [n, q]
    reads and their weights (weight None: 1)."""
    rank = v.type.rank
    if mode == "nearest":
        i, w = ctx.op("expand_dims", v, axes=(rank,)), None
    else:
        base = ctx.op("floor", v)
        offsets = np.arange(2) if mode == "linear" else np.arange(-1, 3)
        offs = ctx.const(offsets.astype(numpy_dtype(v.dtype)))
        i = ctx.op("add", ctx.op("expand_dims", base, axes=(rank,)), offs)
        # tap k sits |t - k| away from the sample, t = v - floor(v)
        dist = ctx.op("abs", ctx.op("sub", ctx.op("expand_dims", ctx.op("sub", v, base), axes=(rank,)), offs))
        w = (ctx.op("sub", ctx.scalar(1, v), dist) if mode == "linear" else _cubic_kernel(ctx, dist))
    zero, top = ctx.scalar(0, v), ctx.scalar(d - 1, v)
    if padding == "zeros":  # taps off the image read 0
        inside = ctx.convert(ctx.op("and", ctx.op("ge", i, zero), ctx.op("le", i, top)), v.dtype)
        w = inside if w is None else ctx.op("mul", w, inside)
    elif padding == "reflection":
        i = _reflect(ctx, i, lo, hi)
    i = ctx.op("clamp", zero, i, top)
    return ctx.convert(i, "i32"), w  # float -> int truncates, as the reference does


@onnx_op("GridSample", since=16)
def _grid_sample(ctx, x, grid):
    mode = ctx.attr("mode", "linear" if ctx.opset >= 20 else "bilinear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    padding = ctx.attr("padding_mode", "zeros")
    align = bool(ctx.attr("align_corners", 0))
    if mode not in ("nearest", "linear", "cubic") or padding not in ("zeros", "border", "reflection"):
        ctx.unsupported(f"mode {mode!r} / padding_mode {padding!r}")
    n, c, *dims = x.shape
    dims = [static_dim(ctx, d, "GridSample's spatial dims") for d in dims]
    s = len(dims)
    out_sp = tuple(grid.shape[1:-1])
    q = math.prod(static_dim(ctx, d, "GridSample's output dims") for d in out_sp)
    work = x.dtype if x.dtype in ("f32", "f64") else "f32"
    g = ctx.reshape(ctx.convert(grid, work), (n, q, s))
    idx, weight, taps = None, None, []
    for i, d in enumerate(dims):  # grid's last axis lists coordinates in reverse (x first)
        k = s - 1 - i
        gi = ctx.reshape(ctx.op("slice", g, start=(0, 0, k), limit=(n, q, k + 1)), (n, q))
        one = ctx.scalar(1, gi)
        if align:
            v = ctx.op("mul", ctx.op("add", gi, one), ctx.scalar((d - 1) / 2, gi))
            lo, hi = 0.0, d - 1.0
        else:
            v = ctx.op("div", ctx.op("sub", ctx.op("mul", ctx.op("add", gi, one), ctx.scalar(d, gi)), one),
                       ctx.scalar(2, gi))
            lo, hi = -0.5, d - 0.5
        if mode == "nearest":
            v = ctx.op("round", v, method="half_to_even")
        if padding == "border":  # only coordinates outside [lo, hi] move
            outside = ctx.op("or", ctx.op("lt", v, ctx.scalar(lo, v)), ctx.op("gt", v, ctx.scalar(hi, v)))
            v = ctx.op("select", outside, ctx.op("clamp", ctx.scalar(0, v), v, ctx.scalar(d - 1, v)), v)
        elif padding == "reflection":
            v = _reflect(ctx, v, lo, hi)
        ti, tw = _taps(ctx, v, d, mode, padding, lo, hi)
        # lay this dim's taps on its own axis: [n, q, 1.., T_i, ..1] so dims combine by broadcasting
        t = ti.shape[-1]
        taps.append(t)
        shape = (n, q) + (1,) * i + (t,) + (1,) * (s - 1 - i)
        stride = math.prod(dims[i + 1:])
        ti = ctx.reshape(ti, shape)
        ti = ti if stride == 1 else ctx.op("mul", ti, ctx.scalar(stride, ti))
        idx = ti if idx is None else ctx.op("add", idx, ti)
        if tw is not None:
            tw = ctx.reshape(tw, shape)
            weight = tw if weight is None else ctx.op("mul", weight, tw)
    t = math.prod(taps)
    full = (n, q) + tuple(taps)
    idx = ctx.op("broadcast_in_dim", idx, shape=full, broadcast_dimensions=tuple(range(s + 2)))
    idx = ctx.op("broadcast_in_dim", ctx.reshape(idx, (n, q * t)), shape=(n, c, q * t),
                 broadcast_dimensions=(0, 2))
    vals = ctx.op("take_along_axis", ctx.reshape(ctx.convert(x, work), (n, c, math.prod(dims))), idx, axis=2)
    vals = ctx.reshape(vals, (n, c, q, t))
    if weight is not None:
        weight = ctx.op("broadcast_in_dim", weight, shape=full, broadcast_dimensions=tuple(range(s + 2)))
        vals = ctx.op("mul", vals, ctx.reshape(weight, (n, 1, q, t)))
    y = ctx.op("reduce_sum", vals, axes=(3,)) if t > 1 else ctx.reshape(vals, (n, c, q))
    return ctx.convert(ctx.reshape(y, (n, c) + out_sp), x.dtype)


# --- AffineGrid -------------------------------------------------------------------------------------
def base_grid(sizes, align_corners: bool) -> np.ndarray:
    """[prod(sizes), s+1] homogeneous normalized coordinates (x first, then y, z, 1)."""
    axes = []
    for d in sizes:
        if align_corners:
            axes.append(np.linspace(-1.0, 1.0, d) if d > 1 else np.array([-1.0]))
        else:
            axes.append((np.arange(d) * 2.0 + 1.0) / d - 1.0)
    mesh = np.meshgrid(*axes, indexing="ij")
    cols = [m.reshape(-1) for m in reversed(mesh)] + [np.ones(math.prod(sizes))]
    return np.stack(cols, -1)


@onnx_op("AffineGrid", since=20)
def _affine_grid(ctx, theta, size):
    dims = known_ints(ctx, size, "AffineGrid's size")
    n, sp = dims[0], dims[2:]
    if len(sp) not in (2, 3) or tuple(theta.shape[1:]) != (len(sp), len(sp) + 1):
        ctx.unsupported(f"theta {theta.type} does not fit size {list(dims)}")
    base = base_grid(sp, bool(ctx.attr("align_corners", 0))).astype(numpy_dtype(theta.dtype))
    # grid[n, p, :] = theta[n] @ base[p]
    g = ctx.op("dot_general", theta, ctx.const(base), contracting_dims=((2,), (1,)))  # [n, s, p]
    g = ctx.op("transpose", g, permutation=(0, 2, 1))
    return ctx.reshape(g, (n,) + tuple(sp) + (len(sp),))


# --- RoiAlign (boxes known at import time) ----------------------------------------------------------
def roi_align_taps(rois, height: int, width: int, out_h: int, out_w: int, scale: float,
                   ratio: int, half_pixel: bool, for_max: bool = False):
    """Flat input positions and weights [R, out_h*out_w, S*4] of every roi's bilinear taps.

    S samples per bin is the largest count any roi needs; rois with fewer get extra taps
    that change nothing: weight 0 for averages, a copy of their first tap for maxima.
    """
    per_roi = []
    for box in np.asarray(rois, np.float64):
        off = 0.5 if half_pixel else 0.0
        x0, y0, x1, y1 = box * scale - off
        rw, rh = x1 - x0, y1 - y0
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out_h, rw / out_w
        gh = ratio if ratio > 0 else int(np.ceil(rh / out_h))
        gw = ratio if ratio > 0 else int(np.ceil(rw / out_w))
        count = max(gh * gw, 1)
        pos = np.zeros((out_h, out_w, gh * gw, 4), np.int64)
        wts = np.zeros((out_h, out_w, gh * gw, 4))
        for ph, pw, iy, ix in itertools.product(range(out_h), range(out_w), range(gh), range(gw)):
            y = y0 + ph * bh + (iy + 0.5) * bh / gh
            x = x0 + pw * bw + (ix + 0.5) * bw / gw
            if y < -1.0 or y > height or x < -1.0 or x > width:
                continue
            y, x = max(y, 0.0), max(x, 0.0)
            yl, xl = int(y), int(x)
            if yl >= height - 1:
                yl = yh = height - 1
                y = float(yl)
            else:
                yh = yl + 1
            if xl >= width - 1:
                xl = xh = width - 1
                x = float(xl)
            else:
                xh = xl + 1
            ly, lx = y - yl, x - xl
            k = iy * gw + ix
            pos[ph, pw, k] = [yl * width + xl, yl * width + xh, yh * width + xl, yh * width + xh]
            wts[ph, pw, k] = [(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx]
        per_roi.append((pos.reshape(out_h * out_w, -1), wts.reshape(out_h * out_w, -1), count))
    s = max(p.shape[1] for p, _, _ in per_roi)
    r = len(per_roi)
    pos = np.zeros((r, out_h * out_w, s), np.int64)
    wts = np.zeros((r, out_h * out_w, s))
    counts = np.ones(r)
    for i, (p, w, cnt) in enumerate(per_roi):
        k = p.shape[1]
        pos[i, :, :k], wts[i, :, :k], counts[i] = p, w, cnt
        pos[i, :, k:] = p[:, :1]
        wts[i, :, k:] = w[:, :1] if for_max else 0.0
    return pos, wts, counts


@onnx_op("RoiAlign", since=10)
def _roi_align(ctx, x, rois, batch_indices):
    boxes = np.asarray(ctx.require_known(rois, "RoiAlign's rois"))
    batch = np.asarray(ctx.require_known(batch_indices, "RoiAlign's batch_indices")).reshape(-1)
    n, c, h, w = x.shape
    h, w = static_dim(ctx, h, "RoiAlign's height"), static_dim(ctx, w, "RoiAlign's width")
    out_h, out_w = ctx.attr("output_height", 1), ctx.attr("output_width", 1)
    half_pixel = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16
                          else "output_half_pixel") == "half_pixel"
    mode = ctx.attr("mode", "avg")
    pos, wts, counts = roi_align_taps(boxes, h, w, out_h, out_w, ctx.attr("spatial_scale", 1.0),
                                      ctx.attr("sampling_ratio", 0), half_pixel, mode == "max")
    r, p, s = pos.shape
    if mode == "avg":
        wts = wts / counts[:, None, None]
    elif mode != "max":
        ctx.unsupported(f"mode {mode!r} (expected avg or max)")
    dt = numpy_dtype(x.dtype)
    feats = ctx.op("take", ctx.reshape(x, (n, c, h * w)), ctx.const(batch.astype(np.int64)), axis=0)
    idx = ctx.op("broadcast_in_dim", ctx.const(pos.reshape(r, p * s)), shape=(r, c, p * s),
                 broadcast_dimensions=(0, 2))
    vals = ctx.op("take_along_axis", feats, idx, axis=2)
    vals = ctx.op("mul", vals, ctx.const(wts.reshape(r, 1, p * s).astype(dt)))
    vals = ctx.reshape(vals, (r, c, p, s))
    y = ctx.op("reduce_sum" if mode == "avg" else "reduce_max", vals, axes=(3,))
    return ctx.reshape(y, (r, c, out_h, out_w))
