"""Neural-network ONNX ops: MatMul, Gemm, Conv, ConvTranspose, pooling, softmax, dropout."""
from __future__ import annotations

import itertools
import math

from ....ir.types import shape_numel
from ..registry import onnx_op
from ._dims import dim_count
from ._util import broadcast_shapes, is_float, norm_axis


# --- matrix products ------------------------------------------------------------------------
def matmul(ctx, a, b, out_dtype: str | None = None):
    """numpy.matmul semantics (1-D promotion, broadcast batch dims) on dot_general."""
    pref = {"preferred_element_type": out_dtype} if out_dtype else {}
    squeeze = []
    if a.type.rank == 1:
        a = ctx.op("expand_dims", a, axes=(0,))
        squeeze.append(-2)
    if b.type.rank == 1:
        b = ctx.op("expand_dims", b, axes=(1,))
        squeeze.append(-1)
    ra, rb = a.type.rank, b.type.rank
    if rb == 2:  # no batch on b: contract a's last dim directly
        y = ctx.op("dot_general", a, b, contracting_dims=((ra - 1,), (0,)), **pref)
    else:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = ctx.broadcast_to(a, tuple(batch) + tuple(a.shape[-2:]))
        b = ctx.broadcast_to(b, tuple(batch) + tuple(b.shape[-2:]))
        nb = len(batch)
        y = ctx.op("dot_general", a, b, contracting_dims=((nb + 1,), (nb,)),
                   batch_dims=(tuple(range(nb)), tuple(range(nb))), **pref)
    if squeeze:
        r = y.type.rank
        y = ctx.op("squeeze", y, axes=tuple(sorted(s + r for s in squeeze)))
    return y


@onnx_op("MatMul")
def _matmul(ctx, a, b):
    return matmul(ctx, a, b)


@onnx_op("Gemm")
def _gemm(ctx, a, b, c=None):
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    ta, tb = ctx.attr("transA", 0), ctx.attr("transB", 0)
    y = ctx.op("dot_general", a, b, contracting_dims=((0 if ta else 1,), (1 if tb else 0,)))
    if alpha != 1.0:
        y = ctx.op("mul", y, ctx.scalar(alpha, y))
    if c is not None and beta != 0.0:
        c = ctx.convert(c, y.dtype)
        if beta != 1.0:
            c = ctx.op("mul", c, ctx.scalar(beta, c))
        y = ctx.op("add", y, c)
    return y


# --- convolution ------------------------------------------------------------------------
def _layouts(nsp: int):
    letters = "DHW" if nsp <= 3 else "ABEFGJKLMPQRSTUVXYZ"
    sp = letters[-nsp:] if nsp <= 3 else letters[:nsp]
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def _same_pads(auto_pad, sizes, kernel, strides, dilations):
    pads_lo, pads_hi = [], []
    for x, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-x // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - x)
        lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        pads_lo.append(lo)
        pads_hi.append(total - lo)
    return list(zip(pads_lo, pads_hi))


def conv_padding(ctx, sizes, kernel, strides, dilations):
    """((lo, hi), ...) per spatial dim from pads / auto_pad."""
    nsp = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # With stride 1 the total padding is the dilated kernel less one, whatever the size.
        if not all(isinstance(x, int) or s == 1 for x, s in zip(sizes, strides)):
            ctx.unsupported(f"auto_pad {auto_pad} with strides {list(strides)} over symbolic "
                            f"spatial sizes {[str(x) for x in sizes]} (padding would depend on "
                            "the size)")
        return _same_pads(auto_pad, [x if isinstance(x, int) else (k - 1) * d + 1
                                     for x, k, d in zip(sizes, kernel, dilations)],
                          kernel, strides, dilations)
    if auto_pad == "VALID":
        return [(0, 0)] * nsp
    pads = ctx.attr("pads", (0,) * (2 * nsp))
    return list(zip(pads[:nsp], pads[nsp:]))


def _bias_add(ctx, y, bias):
    if bias is None:
        return y
    shape = (1, bias.shape[0]) + (1,) * (y.type.rank - 2)
    return ctx.op("add", y, ctx.reshape(ctx.convert(bias, y.dtype), shape))


@onnx_op("Conv")
def _conv(ctx, x, w, bias=None, out_dtype=None):
    nsp = x.type.rank - 2
    kernel = ctx.attr("kernel_shape", tuple(w.shape[2:]))
    strides = ctx.attr("strides", (1,) * nsp)
    dilations = ctx.attr("dilations", (1,) * nsp)
    padding = conv_padding(ctx, x.shape[2:], kernel, strides, dilations)
    y = ctx.op("conv", x, w, dimension_numbers=_layouts(nsp), window_strides=tuple(strides),
               padding=tuple(padding), rhs_dilation=tuple(dilations),
               feature_group_count=ctx.attr("group", 1), preferred_element_type=out_dtype)
    return _bias_add(ctx, y, bias)


@onnx_op("ConvTranspose")
def _conv_transpose(ctx, x, w, bias=None):
    nsp = x.type.rank - 2
    group = ctx.attr("group", 1)
    kernel = ctx.attr("kernel_shape", tuple(w.shape[2:]))
    strides = ctx.attr("strides", (1,) * nsp)
    dilations = ctx.attr("dilations", (1,) * nsp)
    out_pad = ctx.attr("output_padding", (0,) * nsp)
    sizes = x.shape[2:]
    if not all(isinstance(s, int) for s in sizes):
        ctx.unsupported("ConvTranspose needs static spatial sizes")
    keff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape", None)
    if out_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if out_shape is None:
            out_shape = [s * st for s, st in zip(sizes, strides)]
        out_shape = list(out_shape)[-nsp:]
        pads = []
        for i in range(nsp):
            total = strides[i] * (sizes[i] - 1) + out_pad[i] + keff[i] - out_shape[i]
            lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
    elif auto_pad == "VALID":
        pads = [(0, 0)] * nsp
    else:
        p = ctx.attr("pads", (0,) * (2 * nsp))
        pads = list(zip(p[:nsp], p[nsp:]))
    # A transposed conv is a conv of the stride-dilated input with the flipped kernel whose
    # in/out channels are swapped (per group).
    cin, cout_g = w.shape[0], w.shape[1]
    k = ctx.op("reshape", w, shape=(group, cin // group, cout_g) + tuple(w.shape[2:]))
    k = ctx.op("transpose", k, permutation=(0, 2, 1) + tuple(range(3, 3 + nsp)))
    k = ctx.op("reshape", k, shape=(group * cout_g, cin // group) + tuple(w.shape[2:]))
    k = ctx.op("rev", k, axes=tuple(range(2, 2 + nsp)))
    padding = tuple((ke - 1 - lo, ke - 1 - hi + op)
                    for ke, (lo, hi), op in zip(keff, pads, out_pad))
    y = ctx.op("conv", x, k, dimension_numbers=_layouts(nsp), window_strides=(1,) * nsp,
               padding=padding, lhs_dilation=tuple(strides), rhs_dilation=tuple(dilations),
               feature_group_count=group)
    return _bias_add(ctx, y, bias)


# --- pooling ----------------------------------------------------------------------------
def _pool_geometry(ctx, x):
    """(kernel, strides, dilations, padding incl. ceil-mode extra) over x's spatial dims."""
    nsp = x.type.rank - 2
    kernel = ctx.attr("kernel_shape")
    strides = ctx.attr("strides", (1,) * nsp)
    dilations = ctx.attr("dilations", (1,) * nsp)
    sizes = x.shape[2:]
    padding = conv_padding(ctx, sizes, kernel, strides, dilations)
    if ctx.attr("ceil_mode", 0) and not all(isinstance(n, int) or s == 1 for n, s in zip(sizes, strides)):
        ctx.unsupported(f"ceil_mode pooling with strides {list(strides)} over symbolic spatial "
                        f"sizes {[str(n) for n in sizes]} (the extra padding depends on the size)")
    if ctx.attr("ceil_mode", 0) and all(isinstance(n, int) for n in sizes):
        padding = list(padding)
        for i, (n, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations)):
            lo, hi = padding[i]
            keff = (k - 1) * d + 1
            out = -(-(n + lo + hi - keff) // s) + 1
            if (out - 1) * s >= n + lo:  # the last window would start in the padding: drop it
                out -= 1
            padding[i] = (lo, max(hi, (out - 1) * s + keff - n - lo))
    return kernel, strides, dilations, padding


def _window(kind, x, kernel, strides, dilations, padding, ctx):
    return ctx.op("reduce_window", x, kind=kind, window_dimensions=(1, 1) + tuple(kernel),
                  window_strides=(1, 1) + tuple(strides),
                  padding=((0, 0), (0, 0)) + tuple(tuple(p) for p in padding),
                  window_dilation=(1, 1) + tuple(dilations))


@onnx_op("MaxPool")
def _max_pool(ctx, x):
    kernel, strides, dilations, padding = _pool_geometry(ctx, x)
    if ctx.output_used(1):
        return _max_pool_with_indices(ctx, x, kernel, strides, dilations, padding)
    return _window("max", x, kernel, strides, dilations, padding, ctx)


def _max_pool_with_indices(ctx, x, kernel, strides, dilations, padding):
    """MaxPool plus the flat index of each maximum: a running max over the kernel offsets."""
    nsp = len(kernel)
    if not is_float(x.dtype):
        ctx.unsupported("MaxPool indices of a non-float input")
    shape = tuple(x.shape)
    if not all(isinstance(d, int) for d in shape):
        ctx.unsupported("MaxPool indices need static shapes")
    lo = (0, 0) + tuple(p[0] for p in padding)
    hi = (0, 0) + tuple(p[1] for p in padding)
    xp = ctx.op("pad", x, ctx.scalar(float("-inf"), x), low=lo, high=hi)
    out_sp = [(n + p[0] + p[1] - ((k - 1) * d + 1)) // s + 1
              for n, p, k, d, s in zip(shape[2:], padding, kernel, dilations, strides)]
    out_shape = shape[:2] + tuple(out_sp)
    # flat index (row-major, or column-major over spatial dims with storage_order=1)
    sizes = shape[2:]
    col_major = bool(ctx.attr("storage_order", 0))
    best = best_idx = None
    for offs in itertools.product(*(range(k) for k in kernel)):
        start = (0, 0) + tuple(o * d for o, d in zip(offs, dilations))
        limit = out_shape[:2] + tuple(st + (o - 1) * s + 1 for st, o, s in zip(start[2:], out_sp, strides))
        cand = ctx.op("slice", xp, start=start, limit=limit, strides=(1, 1) + tuple(strides))
        idx = ctx.op("mul", ctx.op("iota", dtype="i64", shape=out_shape, axis=0),
                     ctx.scalar(math.prod(shape[1:]), "i64"))
        idx = ctx.op("add", idx, ctx.op("mul", ctx.op("iota", dtype="i64", shape=out_shape, axis=1),
                                        ctx.scalar(math.prod(sizes), "i64")))
        for i in range(nsp):
            pos = ctx.op("add", ctx.op("mul", ctx.op("iota", dtype="i64", shape=out_shape, axis=2 + i),
                                       ctx.scalar(strides[i], "i64")),
                         ctx.scalar(offs[i] * dilations[i] - padding[i][0], "i64"))
            stride = (math.prod(sizes[:i]) if col_major else math.prod(sizes[i + 1:]))
            idx = ctx.op("add", idx, ctx.op("mul", pos, ctx.scalar(stride, "i64")))
        if best is None:
            best, best_idx = cand, idx
        else:
            better = ctx.op("gt", cand, best)  # strict: the first maximum wins, as in the spec
            best = ctx.op("select", better, cand, best)
            best_idx = ctx.op("select", better, idx, best_idx)
    return best, best_idx


@onnx_op("AveragePool")
def _avg_pool(ctx, x):
    kernel, strides, dilations, padding = _pool_geometry(ctx, x)
    explicit = conv_padding(ctx, x.shape[2:], kernel, strides, dilations)
    ones = ctx.op("constant", value=1.0, dtype=x.dtype, shape=tuple(x.shape))
    if ctx.attr("count_include_pad", 0):
        # Explicit pads count as elements; the extra ceil-mode padding does not.
        lo = (0, 0) + tuple(p[0] for p in explicit)
        hi = (0, 0) + tuple(p[1] for p in explicit)
        x = ctx.op("pad", x, ctx.scalar(0, x), low=lo, high=hi)
        ones = ctx.op("pad", ones, ctx.scalar(1, x), low=lo, high=hi)
        padding = [(0, p[1] - e[1]) for p, e in zip(padding, explicit)]
    total = _window("sum", x, kernel, strides, dilations, padding, ctx)
    count = _window("sum", ones, kernel, strides, dilations, padding, ctx)
    return ctx.op("div", total, count)


@onnx_op("LpPool")
def _lp_pool(ctx, x):
    p = float(ctx.attr("p", 2))
    kernel, strides, dilations, padding = _pool_geometry(ctx, x)
    y = ctx.op("pow", ctx.op("abs", x), ctx.scalar(p, x))
    y = _window("sum", y, kernel, strides, dilations, padding, ctx)
    return ctx.op("pow", y, ctx.scalar(1.0 / p, x))


def _spatial_axes(x):
    return tuple(range(2, x.type.rank))


@onnx_op("GlobalAveragePool")
def _global_avg_pool(ctx, x):
    axes = _spatial_axes(x)
    s = ctx.op("reduce_sum", x, axes=axes, keepdims=True)
    return ctx.op("div", s, dim_count(ctx, x, axes, x))


@onnx_op("GlobalMaxPool")
def _global_max_pool(ctx, x):
    return ctx.op("reduce_max", x, axes=_spatial_axes(x), keepdims=True)


@onnx_op("GlobalLpPool")
def _global_lp_pool(ctx, x):
    p = float(ctx.attr("p", 2))
    y = ctx.op("pow", ctx.op("abs", x), ctx.scalar(p, x))
    y = ctx.op("reduce_sum", y, axes=_spatial_axes(x), keepdims=True)
    return ctx.op("pow", y, ctx.scalar(1.0 / p, x))


# --- normalization ------------------------------------------------------------------------
def _mean(ctx, x, axes, keepdims=True):
    return ctx.op("div", ctx.op("reduce_sum", x, axes=tuple(axes), keepdims=keepdims),
                  dim_count(ctx, x, axes, x))


def _channel(ctx, v, rank, dtype):
    return ctx.reshape(ctx.convert(v, dtype), (1, v.shape[0]) + (1,) * (rank - 2))


@onnx_op("BatchNormalization")
def _batch_norm(ctx, x, scale, bias, mean, var):
    eps = ctx.attr("epsilon", 1e-5)
    training = ctx.opset >= 14 and ctx.attr("training_mode", 0)
    if not training and any(ctx.output_used(i) for i in range(1, ctx.num_outputs)):
        ctx.unsupported("BatchNormalization's training outputs are not supported")
    if ctx.attr("spatial", 1) == 0:
        ctx.unsupported("BatchNormalization with spatial=0")
    scale, bias, mean, var = (ctx.convert(v, x.dtype) for v in (scale, bias, mean, var))
    if x.type.rank == 1 or not training:
        if x.type.rank < 2:
            ctx.unsupported("BatchNormalization of a rank < 2 input")
        return ctx.op("batch_norm", x, scale, bias, mean, var, epsilon=eps, axis=1)
    # training mode: normalize with the batch statistics and update the running ones
    axes = (0,) + tuple(range(2, x.type.rank))
    bmean = _mean(ctx, x, axes)
    centered = ctx.op("sub", x, bmean)
    bvar = _mean(ctx, ctx.op("mul", centered, centered), axes)
    inv = ctx.op("rsqrt", ctx.op("add", bvar, ctx.scalar(eps, x)))
    y = ctx.op("add", ctx.op("mul", ctx.op("mul", centered, inv), _channel(ctx, scale, x.type.rank, x.dtype)),
               _channel(ctx, bias, x.type.rank, x.dtype))
    mom = ctx.attr("momentum", 0.9)
    flat = (x.shape[1],)

    def running(old, new):
        new = ctx.reshape(new, flat)
        return ctx.op("add", ctx.op("mul", old, ctx.scalar(mom, old)),
                      ctx.op("mul", new, ctx.scalar(1 - mom, old)))
    return y, running(mean, bmean), running(var, bvar)


@onnx_op("InstanceNormalization")
def _instance_norm(ctx, x, scale, bias):
    eps = ctx.attr("epsilon", 1e-5)
    axes = tuple(range(2, x.type.rank))
    mean = _mean(ctx, x, axes)
    centered = ctx.op("sub", x, mean)
    var = _mean(ctx, ctx.op("mul", centered, centered), axes)
    y = ctx.op("mul", centered, ctx.op("rsqrt", ctx.op("add", var, ctx.scalar(eps, x))))
    return ctx.op("add", ctx.op("mul", y, _channel(ctx, scale, x.type.rank, x.dtype)),
                  _channel(ctx, bias, x.type.rank, x.dtype))


@onnx_op("LayerNormalization", since=17)
def _layer_norm(ctx, x, scale, bias=None):
    axis = norm_axis(ctx.attr("axis", -1), x.type.rank)
    eps = ctx.attr("epsilon", 1e-5)
    stash = "f32" if ctx.attr("stash_type", 1) == 1 and x.dtype in ("f16", "bf16") else x.dtype
    xs = ctx.convert(x, stash)
    axes = tuple(range(axis, x.type.rank))
    mean = _mean(ctx, xs, axes)
    centered = ctx.op("sub", xs, mean)
    var = _mean(ctx, ctx.op("mul", centered, centered), axes)
    inv = ctx.op("rsqrt", ctx.op("add", var, ctx.scalar(eps, xs)))
    y = ctx.convert(ctx.op("mul", centered, inv), x.dtype)
    y = ctx.op("mul", y, ctx.convert(scale, x.dtype))
    if bias is not None:
        y = ctx.op("add", y, ctx.convert(bias, x.dtype))
    return y, mean, inv


@onnx_op("GroupNormalization", since=18)
def _group_norm(ctx, x, scale, bias):
    groups, eps = ctx.attr("num_groups"), ctx.attr("epsilon", 1e-5)
    n, c = x.shape[0], x.shape[1]
    if not isinstance(c, int):
        ctx.unsupported(f"GroupNormalization needs a static channel count, got {c}")
    rest = shape_numel(x.shape[2:])
    dtype = "f32" if x.dtype in ("f16", "bf16") and ctx.attr("stash_type", 1) == 1 else x.dtype
    g = ctx.reshape(ctx.convert(x, dtype), (n, groups, (c // groups) * rest))
    mean = _mean(ctx, g, (2,))
    centered = ctx.op("sub", g, mean)
    var = _mean(ctx, ctx.op("mul", centered, centered), (2,))
    y = ctx.op("mul", centered, ctx.op("rsqrt", ctx.op("add", var, ctx.scalar(eps, g))))
    y = ctx.convert(ctx.reshape(y, x.shape), x.dtype)
    if ctx.opset < 21:  # opset 18: scale/bias are per group
        scale, bias = (ctx.reshape(ctx.broadcast_to(ctx.reshape(v, (groups, 1)), (groups, c // groups)), (c,))
                       for v in (scale, bias))
    return ctx.op("add", ctx.op("mul", y, _channel(ctx, scale, x.type.rank, x.dtype)),
                  _channel(ctx, bias, x.type.rank, x.dtype))


# LpNormalization and LRN live in reduce.py (norm reductions).


# --- softmax family ---------------------------------------------------------------------
def _coerced_2d(ctx, x, fn):
    """Before opset 13 softmax-like ops flatten to 2-D at ``axis`` (default 1)."""
    rank = x.type.rank
    axis = norm_axis(ctx.attr("axis", 1), rank)
    if axis == rank - 1:
        return fn(x, rank - 1)
    shape = x.shape
    inner = shape_numel(shape[axis:])
    outer = shape[:axis]
    flat = ctx.reshape(x, tuple(outer) + (inner,))
    return ctx.reshape(fn(flat, len(outer)), shape)


def _softmax_family(op):
    def v1(ctx, x):
        return _coerced_2d(ctx, x, lambda v, ax: _apply(ctx, op, v, ax))

    def v13(ctx, x):
        return _apply(ctx, op, x, norm_axis(ctx.attr("axis", -1), x.type.rank))
    return v1, v13


def _apply(ctx, op, x, axis):
    return ctx.op(op, x, axis=axis)


# Hardmax lives in reduce.py (it is an argmax).
for _onnx, _ir in {"Softmax": "softmax", "LogSoftmax": "log_softmax"}.items():
    _v1, _v13 = _softmax_family(_ir)
    onnx_op(_onnx)(_v1)
    onnx_op(_onnx, since=13)(_v13)


# --- inference-only ops -------------------------------------------------------------------
@onnx_op("Dropout")
def _dropout(ctx, x, ratio=None, training=None):
    if training is not None and bool(ctx.require_known(training, "training_mode")):
        # training with ratio 0 keeps everything; any other ratio draws random numbers
        r = ctx.require_known(ratio, "ratio") if ratio is not None else 0.5
        if float(r) != 0.0:
            ctx.unsupported("Dropout in training mode is random")
    if ctx.output_used(1):
        mask = ctx.op("constant", value=True, dtype="bool", shape=tuple(x.shape))
        return x, mask
    return x


# --- deformable convolution ------------------------------------------------------------------
@onnx_op("DeformConv", since=19)
def _deform_conv(ctx, x, w, offset, bias=None, mask=None):
    """2-D deformable conv: bilinear samples at offset kernel taps, then a grouped contraction."""
    if x.type.rank != 4 or not all(isinstance(d, int) for d in x.shape + offset.shape):
        ctx.unsupported("DeformConv is supported for 2-D inputs with static shapes")
    n, c, h, wd = x.shape
    oc, icpg, kh, kw = w.shape
    kh, kw = ctx.attr("kernel_shape", (kh, kw))
    group, ogroups = ctx.attr("group", 1), ctx.attr("offset_group", 1)
    sh, sw = ctx.attr("strides", (1, 1))
    dh, dw = ctx.attr("dilations", (1, 1))
    pads = ctx.attr("pads", (0, 0, 0, 0))
    oh, ow = offset.shape[2:]
    k, cpo, flat = kh * kw, c // ogroups, oh * ow
    dt = x.dtype
    # sampling positions [N, G_off, K, oh*ow] for y and x
    off = ctx.reshape(offset, (n, ogroups, k, 2, flat))

    def coord(axis, stride, dil, pad):
        base = ctx.op("iota", dtype=dt, shape=(n, ogroups, kh, kw, oh, ow), axis=4 + axis)
        tap = ctx.op("iota", dtype=dt, shape=(n, ogroups, kh, kw, oh, ow), axis=2 + axis)
        p = ctx.op("add", ctx.op("mul", base, ctx.scalar(stride, dt)),
                   ctx.op("mul", tap, ctx.scalar(dil, dt)))
        p = ctx.reshape(ctx.op("sub", p, ctx.scalar(pad, dt)), (n, ogroups, k, flat))
        lim = [n, ogroups, k, 2, flat]
        start = [0, 0, 0, axis, 0]
        lim[3] = axis + 1
        d = ctx.reshape(ctx.op("slice", off, start=tuple(start), limit=tuple(lim)), (n, ogroups, k, flat))
        return ctx.op("add", p, ctx.convert(d, dt))

    py, px = coord(0, sh, dh, pads[0]), coord(1, sw, dw, pads[1])
    y0, x0 = ctx.op("floor", py), ctx.op("floor", px)
    xf = ctx.reshape(x, (n, c, h * wd))

    def per_channel(v):  # [N, G_off, K, F] -> [N, C, K*F]
        v = ctx.op("broadcast_in_dim", v, shape=(n, ogroups, cpo, k, flat), broadcast_dimensions=(0, 1, 3, 4))
        return ctx.reshape(v, (n, c, k * flat))

    sampled = None
    for cy, cx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy = ctx.op("add", y0, ctx.scalar(cy, dt))
        xx = ctx.op("add", x0, ctx.scalar(cx, dt))
        wy = ctx.op("sub", ctx.scalar(1, dt), ctx.op("abs", ctx.op("sub", py, yy)))
        wx = ctx.op("sub", ctx.scalar(1, dt), ctx.op("abs", ctx.op("sub", px, xx)))
        inside = ctx.op("and", ctx.op("and", ctx.op("ge", yy, ctx.scalar(0, dt)), ctx.op("le", yy, ctx.scalar(h - 1, dt))),
                        ctx.op("and", ctx.op("ge", xx, ctx.scalar(0, dt)), ctx.op("le", xx, ctx.scalar(wd - 1, dt))))
        weight = ctx.op("select", inside, ctx.op("mul", wy, wx), ctx.scalar(0, dt))
        idx = ctx.op("add", ctx.op("mul", ctx.convert(yy, "i64"), ctx.scalar(wd, "i64")), ctx.convert(xx, "i64"))
        idx = ctx.op("select", inside, idx, ctx.scalar(0, "i64"))
        vals = ctx.op("take_along_axis", xf, per_channel(idx), axis=2)
        term = ctx.op("mul", vals, per_channel(weight))
        sampled = term if sampled is None else ctx.op("add", sampled, term)
    if mask is not None:
        sampled = ctx.op("mul", sampled, per_channel(ctx.reshape(ctx.convert(mask, dt), (n, ogroups, k, flat))))
    # grouped contraction over (channels in group, kernel taps)
    s = ctx.reshape(sampled, (n, group, icpg * k, flat))
    wg = ctx.reshape(w, (group, oc // group, icpg * k))
    y = ctx.op("dot_general", s, wg, contracting_dims=((2,), (2,)), batch_dims=((1,), (0,)))
    # y: [group, N, flat, oc/group] -> [N, oc, oh, ow]
    y = ctx.op("transpose", y, permutation=(1, 0, 3, 2))
    y = ctx.reshape(y, (n, oc, oh, ow))
    return _bias_add(ctx, y, bias)
