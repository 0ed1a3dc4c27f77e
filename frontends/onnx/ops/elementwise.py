"""Element-wise ONNX ops: arithmetic, comparisons, logic, casts, activations, unary math."""
from __future__ import annotations

import ml_dtypes

from ....ir import numpy_dtype
from ..dtypes import ir_dtype
from ..registry import onnx_op
from ._util import binary, is_float, unidirectional, variadic

# --- binary arithmetic and comparisons --------------------------------------------------------
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
           "BitwiseAnd": "and", "BitwiseOr": "or", "BitwiseXor": "xor",
           "And": "and", "Or": "or", "Xor": "xor",
           "Equal": "eq", "Less": "lt", "LessOrEqual": "le", "Greater": "gt", "GreaterOrEqual": "ge"}


def _binary_converter(op):
    def convert(ctx, a, b):
        if ctx.opset < 7 and ctx.attr("broadcast", 0) and ctx.has_attr("axis"):
            ctx.unsupported("legacy broadcast with axis (opset < 7)")
        return binary(ctx, op, a, b)
    return convert


for _onnx, _ir in _BINARY.items():
    onnx_op(_onnx)(_binary_converter(_ir))


@onnx_op("Pow")
def _pow(ctx, x, y):
    if x.dtype == y.dtype:
        return ctx.op("pow", x, y)
    if is_float(x.dtype):
        return ctx.op("pow", x, ctx.convert(y, x.dtype))
    # int base, float exponent: compute in the exponent's float type, result has x's type
    return ctx.convert(ctx.op("pow", ctx.convert(x, y.dtype), y), x.dtype)


@onnx_op("Mod")
def _mod(ctx, a, b):
    b = ctx.convert(b, a.dtype)
    r = ctx.op("rem", a, b)  # C fmod: sign of the dividend
    if ctx.attr("fmod", 0) or a.dtype.startswith("u"):
        return r
    # Python-style mod (sign of the divisor): r + b where r != 0 and sign(r) != sign(b)
    zero = ctx.scalar(0, a)
    fix = ctx.op("and", ctx.op("ne", r, zero), ctx.op("ne", ctx.op("lt", r, zero), ctx.op("lt", b, zero)))
    return ctx.op("select", fix, ctx.op("add", r, b), r)


@onnx_op("BitShift")
def _bitshift(ctx, x, y):
    # The spec types BitShift as unsigned; for signed inputs right shifts are arithmetic.
    op = ("shift_left" if ctx.attr("direction") == "LEFT"
          else "shift_right_logical" if x.dtype.startswith("u") else "shift_right_arithmetic")
    return binary(ctx, op, x, y)


for _onnx, _ir in {"Max": "max", "Min": "min", "Sum": "add"}.items():
    onnx_op(_onnx)(lambda ctx, *xs, _ir=_ir: variadic(ctx, _ir, xs))


@onnx_op("Mean")
def _mean(ctx, *xs):
    xs = [x for x in xs if x is not None]
    total = variadic(ctx, "add", xs)
    return ctx.op("div", total, ctx.scalar(len(xs), total))


@onnx_op("Not", "BitwiseNot")
def _not(ctx, x):
    return ctx.op("not", x)


@onnx_op("Where")
def _where(ctx, cond, a, b):
    return ctx.op("select", cond, a, ctx.convert(b, a.dtype))


# --- casts ----------------------------------------------------------------------------------
_FLOAT8 = {"f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz"}


def cast(ctx, x, dtype: str, saturate: bool = True, round_mode: str = "up"):
    """ONNX Cast semantics: float8 targets saturate unless told not to."""
    if x.dtype == dtype:
        return x
    if dtype == "f8e8m0fnu" and is_float(x.dtype):
        return _to_e8m0(ctx, x, saturate, round_mode)
    if dtype in _FLOAT8 and saturate and is_float(x.dtype):
        hi = float(ml_dtypes.finfo(numpy_dtype(dtype)).max)
        # min/max (not clamp) so NaN stays NaN; +-inf saturate to +-max as the spec says
        x = ctx.op("min", ctx.op("max", x, ctx.scalar(-hi, x)), ctx.scalar(hi, x))
    if dtype in ("i4", "u4", "i2", "u2") and is_float(x.dtype):
        x = ctx.op("convert", x, dtype="i32")  # ONNX wraps sub-byte ints; XLA saturates floats
    if x.dtype == "bool" or dtype != "bool":
        return ctx.op("convert", x, dtype=dtype)
    return ctx.op("ne", x, ctx.scalar(0, x))


def _to_e8m0(ctx, x, saturate: bool, round_mode: str):
    """float -> float8_e8m0fnu (a bare power-of-two exponent, biased like float32's)."""
    bits = ctx.op("bitcast_convert", ctx.convert(x, "f32"), dtype="u32")
    exp = ctx.op("and", ctx.op("shift_right_logical", bits, ctx.scalar(23, "u32")), ctx.scalar(0xFF, "u32"))
    mant = ctx.op("and", bits, ctx.scalar(0x7FFFFF, "u32"))
    if round_mode == "up":
        bump = ctx.op("ne", mant, ctx.scalar(0, "u32"))
    elif round_mode == "nearest":
        bump = ctx.op("ge", mant, ctx.scalar(0x400000, "u32"))
    else:
        bump = None
    is_nan = ctx.op("is_nan", x)
    if bump is not None:
        finite = ctx.op("lt", exp, ctx.scalar(0xFF, "u32"))
        exp = ctx.op("add", exp, ctx.convert(ctx.op("and", bump, finite), "u32"))
    top = 0xFE if saturate else 0xFF  # 0xFF is NaN: overflow without saturation gives NaN
    exp = ctx.op("min", exp, ctx.scalar(top, "u32"))
    exp = ctx.op("select", is_nan, ctx.scalar(0xFF, "u32"), exp)
    return ctx.op("bitcast_convert", ctx.convert(exp, "u8"), dtype="f8e8m0fnu")


@onnx_op("Cast")
def _cast(ctx, x):
    return cast(ctx, x, ir_dtype(ctx.attr("to"), "Cast target"), bool(ctx.attr("saturate", 1)),
                ctx.attr("round_mode", "up"))


@onnx_op("BitCast", since=26)
def _bitcast(ctx, x):
    dtype = ir_dtype(ctx.attr("to"), "BitCast target")
    if x.dtype == dtype:
        return x
    if "bool" in (x.dtype, dtype):  # a bool is one byte holding 0 or 1
        return cast(ctx, x, dtype)
    return ctx.op("bitcast_convert", x, dtype=dtype)


@onnx_op("Binarizer", domain="ai.onnx.ml")
def _binarizer(ctx, x):
    above = ctx.op("gt", x, ctx.scalar(ctx.attr("threshold", 0.0), x))
    return ctx.op("select", above, ctx.scalar(1, x), ctx.scalar(0, x))


@onnx_op("CastLike")
def _cast_like(ctx, x, like):
    return cast(ctx, x, like.dtype, bool(ctx.attr("saturate", 1)), ctx.attr("round_mode", "up"))


@onnx_op("Clip")
def _clip_v1(ctx, x):
    lo, hi = ctx.attr("min", None), ctx.attr("max", None)
    if lo is not None:
        x = ctx.op("max", x, ctx.scalar(lo, x))
    if hi is not None:
        x = ctx.op("min", x, ctx.scalar(hi, x))
    return x


@onnx_op("Clip", since=11)
def _clip(ctx, x, lo=None, hi=None):
    if lo is not None:
        x = ctx.op("max", x, ctx.convert(lo, x.dtype))
    if hi is not None:
        x = ctx.op("min", x, ctx.convert(hi, x.dtype))
    return x


# --- activations ----------------------------------------------------------------------------
_UNARY = {"Relu": "relu", "Sigmoid": "logistic", "Softplus": "softplus", "Softsign": "softsign",
          "Mish": "mish", "HardSwish": "hard_swish", "Erf": "erf", "Abs": "abs", "Neg": "neg",
          "Sign": "sign", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
          "Floor": "floor", "Ceil": "ceil", "Tanh": "tanh", "Sin": "sin", "Cos": "cos", "Tan": "tan",
          "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh",
          "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "IsNaN": "is_nan"}
for _onnx, _ir in _UNARY.items():
    onnx_op(_onnx)(lambda ctx, x, _ir=_ir: ctx.op(_ir, x))


@onnx_op("Round")
def _round(ctx, x):
    return ctx.op("round", x, method="half_to_even")


@onnx_op("IsInf")
def _isinf(ctx, x):
    return ctx.op("is_inf", x, detect_positive=bool(ctx.attr("detect_positive", 1)),
                  detect_negative=bool(ctx.attr("detect_negative", 1)))


@onnx_op("LeakyRelu")
def _leaky_relu(ctx, x):
    return ctx.op("leaky_relu", x, alpha=ctx.attr("alpha", 0.01))


@onnx_op("Elu")
def _elu(ctx, x):
    return ctx.op("elu", x, alpha=ctx.attr("alpha", 1.0))


@onnx_op("Celu")
def _celu(ctx, x):
    alpha = ctx.attr("alpha", 1.0)
    zero = ctx.scalar(0, x)
    neg = ctx.op("mul", ctx.scalar(alpha, x),
                 ctx.op("expm1", ctx.op("div", ctx.op("min", x, zero), ctx.scalar(alpha, x))))
    return ctx.op("add", ctx.op("max", x, zero), neg)


_SELU_ALPHA, _SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


@onnx_op("Selu")
def _selu(ctx, x):
    alpha, gamma = ctx.attr("alpha", _SELU_ALPHA), ctx.attr("gamma", _SELU_GAMMA)
    zero = ctx.scalar(0, x)
    neg = ctx.op("mul", ctx.scalar(alpha, x), ctx.op("expm1", ctx.op("min", x, zero)))
    y = ctx.op("select", ctx.op("gt", x, zero), x, neg)
    return ctx.op("mul", ctx.scalar(gamma, x), y)


@onnx_op("ThresholdedRelu")
def _thresholded_relu(ctx, x):
    alpha = ctx.attr("alpha", 1.0)
    return ctx.op("select", ctx.op("gt", x, ctx.scalar(alpha, x)), x, ctx.scalar(0, x))


@onnx_op("PRelu")
def _prelu(ctx, x, slope):
    slope = unidirectional(ctx, ctx.convert(slope, x.dtype), x.shape)
    neg = ctx.op("mul", x, slope)
    return ctx.op("select", ctx.op("lt", x, ctx.scalar(0, x)), neg, x)


@onnx_op("HardSigmoid")
def _hard_sigmoid(ctx, x):
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    y = ctx.op("add", ctx.op("mul", x, ctx.scalar(alpha, x)), ctx.scalar(beta, x))
    return ctx.op("min", ctx.op("max", y, ctx.scalar(0, x)), ctx.scalar(1, x))


@onnx_op("Gelu", since=20)
def _gelu(ctx, x):
    return ctx.op("gelu", x, approximate=ctx.attr("approximate", "none") == "tanh")


@onnx_op("Swish", since=24)
def _swish(ctx, x):
    alpha = ctx.attr("alpha", 1.0)
    return ctx.op("mul", x, ctx.op("logistic", ctx.op("mul", x, ctx.scalar(alpha, x))))


@onnx_op("Shrink")
def _shrink(ctx, x):
    lambd, bias = ctx.attr("lambd", 0.5), ctx.attr("bias", 0.0)
    lo = ctx.op("lt", x, ctx.scalar(-lambd, x))
    hi = ctx.op("gt", x, ctx.scalar(lambd, x))
    zero = ctx.scalar(0, x)
    return ctx.op("select", lo, ctx.op("add", x, ctx.scalar(bias, x)),
                  ctx.op("select", hi, ctx.op("sub", x, ctx.scalar(bias, x)), zero))
