"""Quantization ops (QDQ format and integer kernels) onto the IR's ``quantize``/``dequantize``.

QuantizeLinear/DequantizeLinear (per tensor, per axis, blocked) become one node each, so passes
find them again; QLinearMatMul/QLinearConv become an integer dot/conv whose int32 accumulator is
dequantized and requantized. Int8/uint8/int16/int4/uint4/int2 and float8/float4 are real IR
dtypes, so a QDQ model keeps its quantized tensors.
"""
from __future__ import annotations

import math

import ml_dtypes

from ....ir import numpy_dtype
from ..dtypes import ir_dtype
from ..registry import onnx_op
from ....ir.ops.quant import QUANT_DTYPES
from ._util import is_float, norm_axis
from .elementwise import cast
from .nn import _conv, matmul

_INT_RANGE = {"i2": (-2, 1), "u2": (0, 3), "i4": (-8, 7), "u4": (0, 15)}


def int_range(dtype: str) -> tuple[int, int]:
    """(lowest, highest) of an integer dtype, including 2- and 4-bit ones."""
    if dtype in _INT_RANGE:
        return _INT_RANGE[dtype]
    info = ml_dtypes.iinfo(numpy_dtype(dtype))
    return int(info.min), int(info.max)


def _compute_dtype(*values) -> str:
    """f64 if any operand is double, else f32: quantization arithmetic is done in float."""
    return "f64" if any(v is not None and v.dtype == "f64" for v in values) else "f32"


def expand_scale(ctx, s, x, axis: int, block_size: int = 0):
    """A scale / zero point shaped to broadcast against ``x`` (per tensor, axis or block)."""
    rank = x.type.rank
    if s.type.rank == 0 or (s.type.rank == 1 and s.shape[0] == 1 and not block_size):
        return ctx.reshape(s, ())
    axis = norm_axis(axis, rank)
    if block_size:
        if s.type.rank != rank:
            ctx.unsupported(f"blocked scale {s.type} must have the rank of {x.type}")
        nb = s.shape[axis]
        # repeat each scale block_size times along axis, then trim to x's length
        shape = list(s.shape)
        shape.insert(axis + 1, block_size)
        dims = tuple(i for i in range(rank + 1) if i != axis + 1)
        r = ctx.op("broadcast_in_dim", s, shape=tuple(shape), broadcast_dimensions=dims)
        full = list(s.shape)
        full[axis] = nb * block_size
        r = ctx.reshape(r, full)
        n = x.shape[axis]
        if full[axis] != n:
            start, limit = [0] * rank, list(full)
            limit[axis] = n
            r = ctx.op("slice", r, start=tuple(start), limit=tuple(limit))
        return r
    if s.type.rank != 1:
        ctx.unsupported(f"per-axis scale must be 1-D, got {s.type}")
    shape = [1] * rank
    shape[axis] = s.shape[0]
    return ctx.reshape(s, shape)


def quantize(ctx, x, scale, zp, dtype: str, axis: int = 1, block_size: int = 0,
             saturate: bool = True):
    """saturate(round(x / scale) + zero_point) in ``dtype``: one ``quantize`` node."""
    if dtype not in QUANT_DTYPES:
        ctx.unsupported(f"quantizing to {dtype} (supported: {', '.join(QUANT_DTYPES)})")
    if not saturate and is_float(dtype):
        return _quantize_unsaturated(ctx, x, scale, zp, dtype, axis, block_size)
    if not is_float(scale.dtype):
        ctx.unsupported(f"scale of type {scale.type} (it must be a float tensor)")
    if not is_float(x.dtype):
        x = ctx.convert(x, scale.dtype)
    args = (x, scale) if zp is None else (x, scale, _zero_point(ctx, zp, scale, dtype))
    return ctx.op("quantize", *args, dtype=dtype, axis=_axis(x, scale, axis),
                  block_size=block_size or None)


def _axis(x, scale, axis: int) -> int:
    """The axis attribute, normalised (ignored by per-tensor scales: kept at the default)."""
    if scale.type.rank == 0 or (scale.type.rank == 1 and scale.shape[0] == 1):
        return 1
    return norm_axis(axis, x.type.rank)


def _zero_point(ctx, zp, scale, dtype: str):
    """A zero point with the quantized type and the scale's shape (or a scalar)."""
    if zp.dtype != dtype:
        zp = ctx.convert(zp, dtype)
    if zp.type.rank and tuple(zp.shape) != tuple(scale.shape) and math.prod(zp.shape) == 1:
        zp = ctx.reshape(zp, ())
    return zp


def _quantize_unsaturated(ctx, x, scale, zp, dtype, axis, block_size):
    """A float8 quantize with saturate=0 (out-of-range values become inf/NaN, not max)."""
    ct = _compute_dtype(x, scale)
    y = ctx.op("div", ctx.convert(x, ct), ctx.convert(expand_scale(ctx, scale, x, axis, block_size), ct))
    if zp is not None:
        y = ctx.op("add", y, ctx.convert(expand_scale(ctx, zp, x, axis, block_size), ct))
    return cast(ctx, y, dtype, False)


def dequantize(ctx, x, scale, zp, axis: int = 1, block_size: int = 0, out_dtype: str | None = None):
    """(x - zero_point) * scale, in the scale's dtype: one ``dequantize`` node."""
    if not is_float(scale.dtype):
        ctx.unsupported(f"scale of type {scale.type} (it must be a float tensor)")
    if x.dtype not in QUANT_DTYPES and x.dtype not in ("i32",):
        ctx.unsupported(f"dequantizing {x.type} (supported: {', '.join(QUANT_DTYPES)}, i32)")
    args = (x, scale) if zp is None else (x, scale, _zero_point(ctx, zp, scale, x.dtype))
    return ctx.op("dequantize", *args, axis=_axis(x, scale, axis), block_size=block_size or None,
                  dtype=out_dtype if out_dtype and out_dtype != scale.dtype else None)


@onnx_op("QuantizeLinear", since=10)
def _quantize_linear(ctx, x, scale, zp=None):
    out = ctx.attr("output_dtype", 0)
    dtype = zp.dtype if zp is not None else ir_dtype(out) if out else "u8"
    return quantize(ctx, x, scale, zp, dtype, ctx.attr("axis", 1), ctx.attr("block_size", 0),
                    bool(ctx.attr("saturate", 1)))


@onnx_op("DequantizeLinear", since=10)
def _dequantize_linear(ctx, x, scale, zp=None):
    out = ctx.attr("output_dtype", 0)
    return dequantize(ctx, x, scale, zp, ctx.attr("axis", 1), ctx.attr("block_size", 0),
                      ir_dtype(out) if out else None)


@onnx_op("DynamicQuantizeLinear", since=11)
def _dynamic_quantize_linear(ctx, x):
    axes = tuple(range(x.type.rank))
    zero = ctx.scalar(0, x)
    lo = ctx.op("min", ctx.op("reduce_min", x, axes=axes), zero)
    hi = ctx.op("max", ctx.op("reduce_max", x, axes=axes), zero)
    scale = ctx.op("div", ctx.op("sub", hi, lo), ctx.scalar(255, x))
    zp = ctx.op("round", ctx.op("sub", zero, ctx.op("div", lo, scale)), method="half_to_even")
    zp = ctx.op("min", ctx.op("max", zp, zero), ctx.scalar(255, x))
    zp_u8 = ctx.convert(zp, "u8")
    return quantize(ctx, x, scale, zp_u8, "u8"), scale, zp_u8


def _centered(ctx, v, zp, rows_axis: int | None = None):
    """v - zero_point in int32 (a 1-D zero point applies per row when ``rows_axis`` is set)."""
    v = ctx.convert(v, "i32")
    if zp is None:
        return v
    z = ctx.convert(zp, "i32")
    if z.type.rank == 1 and z.shape[0] != 1 and rows_axis is not None:
        shape = [1] * v.type.rank
        shape[rows_axis] = z.shape[0]
        z = ctx.reshape(z, shape)
    elif z.type.rank == 1 and z.shape[0] == 1:
        z = ctx.reshape(z, ())
    return ctx.op("sub", v, z)


@onnx_op("MatMulInteger", since=10)
def _matmul_integer(ctx, a, b, a_zp=None, b_zp=None):
    a = _centered(ctx, a, a_zp, rows_axis=a.type.rank - 2 if a.type.rank >= 2 else None)
    b = _centered(ctx, b, b_zp)
    return matmul(ctx, a, b)


@onnx_op("ConvInteger", since=10)
def _conv_integer(ctx, x, w, x_zp=None, w_zp=None):
    x = _centered(ctx, x, x_zp)
    w = _centered(ctx, w, w_zp, rows_axis=0)
    return _conv(ctx, x, w)


def _requantize(ctx, acc, real_scale, y_zp, dtype):
    ct = "f32"
    y = ctx.op("mul", ctx.convert(acc, ct), real_scale)
    y = ctx.op("round", y, method="half_to_even")
    if y_zp is not None:
        y = ctx.op("add", y, ctx.convert(ctx.reshape(y_zp, ()) if math.prod(y_zp.shape) == 1 else y_zp, ct))
    lo, hi = int_range(dtype)
    y = ctx.op("min", ctx.op("max", y, ctx.scalar(lo, y)), ctx.scalar(hi, y))
    return ctx.convert(ctx.convert(y, "i32"), dtype)


def _f32(ctx, v, shape=None):
    v = ctx.convert(v, "f32")
    if math.prod(v.shape) == 1:
        return ctx.reshape(v, ())
    return ctx.reshape(v, shape) if shape is not None else v


def _scale_vector(ctx, s):
    """A scale as f32: a scalar, or a vector when it has more than one entry."""
    s = ctx.convert(s, "f32")
    return ctx.reshape(s, ()) if math.prod(s.shape) == 1 else s


def _requantize_ops(ctx, acc, in_scale, axis: int, y_scale, y_zp, dtype: str):
    """int32 accumulator -> dequantize (by the product of the input scales) -> quantize."""
    real = ctx.op("dequantize", acc, in_scale, axis=axis)
    ys = _scale_vector(ctx, y_scale)
    zp = None if y_zp is None else _zero_point(ctx, y_zp, ys, dtype)
    return ctx.op("quantize", real, ys, *(() if zp is None else (zp,)), dtype=dtype)


@onnx_op("QLinearMatMul", since=10)
def _qlinear_matmul(ctx, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp=None):
    acc = matmul(ctx, _centered(ctx, a, a_zp, rows_axis=a.type.rank - 2),
                 _centered(ctx, b, b_zp))
    dtype = y_zp.dtype if y_zp is not None else a.dtype
    sa, sb = _scale_vector(ctx, a_scale), _scale_vector(ctx, b_scale)
    if sa.type.rank == 0 or sb.type.rank == 0:  # one scale vector at most: per-axis
        axis = acc.type.rank - 1 if sb.type.rank else acc.type.rank - 2 if sa.type.rank else 1
        return _requantize_ops(ctx, acc, ctx.op("mul", sa, sb), axis, y_scale, y_zp, dtype)
    # a per-row and a per-column scale: their product is a matrix, not a per-axis scale
    real = ctx.op("div", ctx.op("mul", ctx.reshape(sa, (sa.shape[0], 1)), sb), _f32(ctx, y_scale))
    return _requantize(ctx, acc, real, y_zp, dtype)


@onnx_op("QLinearConv", since=10)
def _qlinear_conv(ctx, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp=None, bias=None):
    acc = _conv(ctx, _centered(ctx, x, x_zp), _centered(ctx, w, w_zp, rows_axis=0))
    if bias is not None:
        acc = ctx.op("add", acc, ctx.reshape(ctx.convert(bias, "i32"),
                                             (1, bias.shape[0]) + (1,) * (x.type.rank - 2)))
    dtype = y_zp.dtype if y_zp is not None else x.dtype
    scale = ctx.op("mul", _scale_vector(ctx, x_scale), _scale_vector(ctx, w_scale))
    return _requantize_ops(ctx, acc, scale, 1, y_scale, y_zp, dtype)
