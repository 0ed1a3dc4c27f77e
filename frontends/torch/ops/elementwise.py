"""Element-wise ATen ops: unary math, arithmetic with torch's type promotion, comparisons."""
from __future__ import annotations

import math

from ....ir import Value
from ....ir.types import is_float, is_int
from ..context import promote
from ..registry import aten_op

_UNARY_FLOAT = {"exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "tanh": "tanh",
                "sigmoid": "logistic", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin",
                "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh",
                "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "erf": "erf",
                "expm1": "expm1", "log1p": "log1p"}


def _unary_float(op):
    def conv(ctx, x):
        return ctx.op(op, ctx.convert(x, ctx.out_dtype))
    return conv


for _name, _op in _UNARY_FLOAT.items():
    aten_op(f"aten.{_name}.default")(_unary_float(_op))


def _same_kind(op):
    def conv(ctx, x):
        return ctx.op(op, ctx.convert(x, ctx.out_dtype))
    return conv


for _name in ("neg", "sign", "relu"):
    aten_op(f"aten.{_name}.default")(_same_kind(_name))


@aten_op("aten.abs.default")
def _abs(ctx, x):
    if x.dtype in ("c64", "c128"):  # the modulus of a complex number
        re, im = ctx.op("real", x), ctx.op("imag", x)
        return ctx.op("sqrt", ctx.op("add", ctx.op("mul", re, re), ctx.op("mul", im, im)))
    return ctx.op("abs", x)


@aten_op("aten.reciprocal.default")
def _reciprocal(ctx, x):
    x = ctx.convert(x, ctx.out_dtype)
    return ctx.op("div", ctx.scalar(1, x.dtype), x)


@aten_op("aten.floor.default", "aten.ceil.default")
def _floor_ceil(ctx, x):
    return x if not is_float(x.dtype) else ctx.op(ctx.target.split(".")[1], x)


def trunc(ctx, x: Value) -> Value:
    """Round toward zero (floats; ints are already whole)."""
    if not is_float(x.dtype):
        return x
    neg = ctx.op("lt", x, ctx.scalar(0, x.dtype))
    return ctx.op("select", neg, ctx.op("ceil", x), ctx.op("floor", x))


@aten_op("aten.trunc.default")
def _trunc(ctx, x):
    return trunc(ctx, x)


@aten_op("aten.round.default")
def _round(ctx, x):
    return x if not is_float(x.dtype) else ctx.op("round", x, method="half_to_even")


@aten_op("aten.round.decimals")
def _round_decimals(ctx, x, decimals=0):
    k = ctx.scalar(10.0 ** decimals, x.dtype)
    return ctx.op("div", ctx.op("round", ctx.op("mul", x, k), method="half_to_even"), k)


@aten_op("aten.log2.default", "aten.log10.default")
def _log_base(ctx, x):
    x = ctx.convert(x, ctx.out_dtype)
    base = 2.0 if ctx.target == "aten.log2.default" else 10.0
    return ctx.op("div", ctx.op("log", x), ctx.scalar(math.log(base), x.dtype))


@aten_op("aten.gelu.default")
def _gelu(ctx, x, approximate="none"):
    return ctx.op("gelu", x, approximate=approximate == "tanh")


@aten_op("aten.hardtanh.default", "aten.clamp.default")
def _clamp(ctx, x, min_val=None, max_val=None, **kw):
    # hardtanh(x, min_val=-1, max_val=1); clamp(x, min=None, max=None)
    if ctx.target == "aten.hardtanh.default":
        lo = -1.0 if min_val is None else min_val
        hi = 1.0 if max_val is None else max_val
    else:
        lo, hi = kw.get("min", min_val), kw.get("max", max_val)
    x = ctx.convert(x, ctx.out_dtype)
    if lo is not None:
        x = ctx.op("max", x, ctx.scalar(lo, x.dtype))
    if hi is not None:
        x = ctx.op("min", x, ctx.scalar(hi, x.dtype))
    return x


@aten_op("aten.clamp.Tensor")
def _clamp_tensor(ctx, x, min=None, max=None):  # noqa: A002 - ATen's names
    out = ctx.out_dtype
    x = ctx.convert(x, out)
    if min is not None:
        x = ctx.op("max", *ctx.operands(x, min, dtype=out))
    if max is not None:
        x = ctx.op("min", *ctx.operands(x, max, dtype=out))
    return x


@aten_op("aten.leaky_relu.default")
def _leaky_relu(ctx, x, negative_slope=0.01):
    return ctx.op("leaky_relu", x, alpha=float(negative_slope))


@aten_op("aten.elu.default")
def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if input_scale != 1:
        x = ctx.op("mul", x, ctx.scalar(input_scale, x.dtype))
    y = ctx.op("elu", x, alpha=float(alpha))
    return y if scale == 1 else ctx.op("mul", y, ctx.scalar(scale, x.dtype))


@aten_op("aten.logical_not.default")
def _logical_not(ctx, x):
    return ctx.op("not", ctx.op("ne", x, ctx.scalar(0, x.dtype)) if x.dtype != "bool" else x)


@aten_op("aten.bitwise_not.default")
def _bitwise_not(ctx, x):
    return ctx.op("not", x)


@aten_op("aten.isnan.default")
def _isnan(ctx, x):
    return ctx.op("is_nan", x) if is_float(x.dtype) else ctx.op("ne", x, x)


@aten_op("aten.isinf.default")
def _isinf(ctx, x):
    if not is_float(x.dtype):
        return ctx.op("ne", x, x)
    return ctx.op("is_inf", x)


# --- binary arithmetic ------------------------------------------------------------------------
def _alpha(ctx, b, alpha, dtype):
    if alpha is None or alpha == 1:
        return b
    return ctx.op("mul", b, ctx.scalar(alpha, dtype))


@aten_op("aten.add.Tensor", "aten.add.Scalar")
def _add(ctx, a, b, alpha=1):
    a, b = ctx.operands(a, b, dtype=ctx.out_dtype)
    return ctx.op("add", a, _alpha(ctx, b, alpha, a.dtype))


@aten_op("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(ctx, a, b, alpha=1):
    a, b = ctx.operands(a, b, dtype=ctx.out_dtype)
    return ctx.op("sub", a, _alpha(ctx, b, alpha, a.dtype))


def _binary(op):
    def conv(ctx, a, b):
        return ctx.op(op, *ctx.operands(a, b, dtype=ctx.out_dtype))
    return conv


for _names, _op in [(("aten.mul.Tensor", "aten.mul.Scalar"), "mul"),
                    (("aten.maximum.default",), "max"), (("aten.minimum.default",), "min"),
                    (("aten.atan2.default",), "atan2"),
                    (("aten.fmod.Tensor", "aten.fmod.Scalar"), "rem")]:
    aten_op(*_names)(_binary(_op))


def _bitwise(op):
    def conv(ctx, a, b):
        return ctx.op(op, *ctx.operands(a, b, dtype=ctx.out_dtype))
    return conv


for _kind in ("and", "or", "xor"):
    aten_op(f"aten.bitwise_{_kind}.Tensor", f"aten.bitwise_{_kind}.Scalar")(_bitwise(_kind))


def _logical(op):
    def conv(ctx, a, b):
        a, b = (ctx.op("ne", *ctx.operands(v, 0)) if not (isinstance(v, Value) and v.dtype == "bool")
                else v for v in (a, b))
        return ctx.op(op, a, b)
    return conv


for _kind in ("and", "or", "xor"):
    aten_op(f"aten.logical_{_kind}.default")(_logical(_kind))


@aten_op("aten.div.Tensor", "aten.div.Scalar")
def _div(ctx, a, b):
    return ctx.op("div", *ctx.operands(a, b, dtype=ctx.out_dtype))


@aten_op("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(ctx, a, b, rounding_mode=None):
    a, b = ctx.operands(a, b, dtype=ctx.out_dtype)
    if rounding_mode is None:
        return ctx.op("div", a, b)
    if is_float(a.dtype):
        q = ctx.op("div", a, b)
        return trunc(ctx, q) if rounding_mode == "trunc" else ctx.op("floor", q)
    q = ctx.op("div", a, b)  # integer division truncates
    if rounding_mode == "trunc":
        return q
    return _floor_fix(ctx, q, ctx.op("rem", a, b), b, subtract_one=True)


def _floor_fix(ctx, q, r, b, subtract_one):
    """Turn truncated division into floor division (q - 1), or fmod into Python's mod (r + b),
    where the remainder is non-zero and has the other sign than the divisor."""
    zero = ctx.scalar(0, r.dtype)
    fix = ctx.op("and", ctx.op("ne", r, zero),
                 ctx.op("ne", ctx.op("lt", r, zero), ctx.op("lt", b, ctx.scalar(0, b.dtype))))
    fixed = ctx.op("sub", q, ctx.scalar(1, q.dtype)) if subtract_one else ctx.op("add", r, b)
    return ctx.op("select", fix, fixed, q if subtract_one else r)


@aten_op("aten.remainder.Tensor", "aten.remainder.Scalar")
def _remainder(ctx, a, b):
    a, b = ctx.operands(a, b, dtype=ctx.out_dtype)
    return _floor_fix(ctx, None, ctx.op("rem", a, b), b, subtract_one=False)


@aten_op("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(ctx, a, b):
    out = ctx.out_dtype
    if isinstance(a, Value) and isinstance(b, (int, float)) and math.isfinite(b) \
            and float(b) == int(b) and abs(int(b)) <= 8 and (is_float(out) or int(b) >= 0):
        return ctx.op("integer_pow", ctx.convert(a, out), y=int(b))
    if isinstance(a, Value) and b == 0.5 and is_float(out):
        return ctx.op("sqrt", ctx.convert(a, out))
    return ctx.op("pow", *ctx.operands(a, b, dtype=out))


# --- comparisons and selection -----------------------------------------------------------------
for _cmp in ("eq", "ne", "lt", "le", "gt", "ge"):
    def _compare(ctx, a, b, _op=_cmp):
        return ctx.op(_op, *ctx.operands(a, b, dtype=promote([a, b])))
    aten_op(f"aten.{_cmp}.Tensor", f"aten.{_cmp}.Scalar")(_compare)


@aten_op("aten.where.self")
def _where(ctx, cond, a, b):
    cond = ctx.tensor(cond, "bool")
    a, b = ctx.operands(a, b, dtype=ctx.out_dtype)
    shape = ctx.out_type().shape
    return ctx.op("select", ctx.broadcast_to(cond, shape), ctx.broadcast_to(a, shape),
                  ctx.broadcast_to(b, shape))


__all__ = ["trunc", "is_int"]
