"""Quantization ops: ``quantize`` (float -> low-precision) and ``dequantize`` (back to float).

The pair ``dequantize(quantize(x, s, z), s, z)`` is fake-quant. Scales are per tensor (a
scalar or ``[1]``), per axis (a vector along ``axis``) or blocked (``block_size`` > 0: the
scale has x's rank and ``ceil(x.shape[axis] / block_size)`` entries along ``axis``).
"""
from __future__ import annotations

from ..registry import AttrSpec, define_op
from ..types import TensorType, dims_equal, is_float, is_int
from ._rules import norm_axis, require

# Integer targets take round-half-to-even then clip to the dtype's range; float targets a
# saturating round-to-nearest cast (clip to the largest finite value).
INT_QUANT_DTYPES = ("i2", "u2", "i4", "u4", "i8", "u8", "i16", "u16")
FLOAT_QUANT_DTYPES = ("f8e4m3fn", "f8e5m2", "f8e4m3fnuz", "f8e5m2fnuz", "f4e2m1fn")
QUANT_DTYPES = INT_QUANT_DTYPES + FLOAT_QUANT_DTYPES
_INT_RANGE = {"i2": (-2, 1), "u2": (0, 3), "i4": (-8, 7), "u4": (0, 15), "i8": (-128, 127),
              "u8": (0, 255), "i16": (-32768, 32767), "u16": (0, 65535)}


def quant_range(dtype: str) -> tuple[float, float]:
    """(lowest, highest) representable value of a quantized dtype."""
    if dtype in _INT_RANGE:
        return _INT_RANGE[dtype]
    import ml_dtypes
    from ..types import numpy_dtype
    hi = float(ml_dtypes.finfo(numpy_dtype(dtype)).max)
    return -hi, hi


def scale_granularity(x: TensorType, scale: TensorType, axis: int, block_size: int) -> str:
    """per_tensor | per_axis | blocked, checking that ``scale`` fits ``x`` (OpTypeError if not)."""
    if block_size:
        require(block_size > 0, f"block_size {block_size} must be positive")
        ax = norm_axis(axis, x.rank)
        require(scale.rank == x.rank, f"a blocked scale {scale} must have the rank of {x}")
        for i, (d, s) in enumerate(zip(x.shape, scale.shape)):
            if i == ax:
                if isinstance(d, int):
                    want = -(-d // block_size)
                    require(s == want, f"blocked scale {scale}: axis {ax} has {s} blocks, "
                                       f"{d} / block_size {block_size} needs {want}")
            else:
                require(dims_equal(d, s), f"blocked scale {scale} must match {x} outside axis {ax}")
        return "blocked"
    if scale.rank == 0 or (scale.rank == 1 and scale.shape[0] == 1):
        return "per_tensor"
    ax = norm_axis(axis, x.rank)
    require(scale.rank == 1 and dims_equal(scale.shape[0], x.shape[ax]),
            f"a per-axis scale {scale} must be a vector of length {x.shape[ax]} (axis {ax} of {x})")
    return "per_axis"


def _check_params(op: str, x: TensorType, scale: TensorType, zp: TensorType | None,
                  axis: int, block_size: int, qdtype: str) -> None:
    require(is_float(scale.dtype), f"{op}: the scale must be a float tensor, got {scale}")
    scale_granularity(x, scale, axis, block_size)
    if zp is not None:
        require(zp.dtype == qdtype, f"{op}: the zero point {zp} must have the quantized "
                                    f"element type {qdtype}")
        require(zp.rank == 0 or (zp.rank == 1 and zp.shape[0] == 1)
                or tuple(zp.shape) == tuple(scale.shape),
                f"{op}: the zero point {zp} must be a scalar or have the scale's shape {scale}")


def _quantize(types, attrs):
    x, scale, *rest = types
    dtype = attrs["dtype"]
    require(dtype in QUANT_DTYPES, f"quantize: dtype {dtype!r} is not a quantized type "
                                   f"({', '.join(QUANT_DTYPES)})")
    require(is_float(x.dtype), f"quantize: the input must be float, got {x}")
    _check_params("quantize", x, scale, rest[0] if rest else None, attrs["axis"],
                  attrs["block_size"], dtype)
    return [x.with_dtype(dtype)]


def _dequantize(types, attrs):
    q, scale, *rest = types
    require(q.dtype in QUANT_DTYPES or is_int(q.dtype),
            f"dequantize: the input must be a quantized type ({', '.join(QUANT_DTYPES)}) "
            f"or an integer, got {q}")
    _check_params("dequantize", q, scale, rest[0] if rest else None, attrs["axis"],
                  attrs["block_size"], q.dtype)
    out = attrs.get("dtype") or scale.dtype
    require(is_float(out), f"dequantize: dtype {out!r} must be a float type")
    return [q.with_dtype(out)]


def _flops(ins, outs, attrs, symbols):
    return 3 * outs[0].numel(symbols)  # divide or multiply, round/offset, clip


_COMMON = [AttrSpec("axis", "int", 1, "the channel axis of a per-axis or blocked scale"),
           AttrSpec("block_size", "int", 0, "group size along axis (0: not blocked)")]

define_op("quantize", _quantize, arity=(2, 3), flops=_flops,
          attrs=[*_COMMON, AttrSpec("dtype", "dtype", doc="quantized element type (i8, u8, i4, "
                                                          "u4, f8e4m3fn, f8e5m2, ...)")],
          doc="saturate(round(x / scale) + zero_point) in dtype (ONNX QuantizeLinear).")
define_op("dequantize", _dequantize, arity=(2, 3), flops=_flops,
          attrs=[*_COMMON, AttrSpec("dtype", "dtype", None, "float output type (default: the "
                                                                "scale's)")],
          doc="(q - zero_point) * scale (ONNX DequantizeLinear); after quantize it is fake-quant.")

__all__ = ["FLOAT_QUANT_DTYPES", "INT_QUANT_DTYPES", "QUANT_DTYPES", "quant_range",
           "scale_granularity"]
