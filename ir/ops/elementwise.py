"""Element-wise ops: unary math, binary arithmetic with numpy broadcasting, comparisons."""
from __future__ import annotations

from ..registry import AttrSpec, OpTypeError
from ..registry import define_op as _define_op
from ..types import COMPLEX_DTYPES, INT_DTYPES, is_float
from ._rules import broadcast_shapes, require, same_dtype

UNARY_FLOAT = ["exp", "exp2", "expm1", "log", "log1p", "sqrt", "rsqrt", "cbrt", "tanh", "logistic",
               "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh",
               "atanh", "erf", "erfc", "erf_inv", "lgamma", "digamma", "relu6", "silu",
               "softplus", "softsign", "selu", "mish", "hard_sigmoid", "hard_swish"]
UNARY_ANY = ["neg", "abs", "sign", "square", "relu", "reciprocal"]
UNARY_ROUNDING = ["floor", "ceil"]
BINARY_ARITH = ["add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "nextafter"]
BINARY_BITWISE = ["and", "or", "xor", "shift_left", "shift_right_arithmetic",
                  "shift_right_logical"]
COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]
COMMUTATIVE = {"add", "mul", "max", "min", "and", "or", "xor", "eq", "ne"}


# Element types an op takes, where its shape rule alone would accept more: the type rule
# must reject what no lowering can compute (XLA has no floor of an int, no bitwise or of
# floats, no erf of a complex), so errors surface at graph build time, naming the op.
_F, _C, _I, _B = "float", "complex", "int", "bool"
ACCEPTS = {
    **{op: (_F, _C, _I) for op in ["neg", "sign", "square", "reciprocal", "integer_pow",
                                   "add", "sub", "mul", "div", "pow"]},
    **{op: (_F, _I) for op in ["abs", "relu", "rem", "round"]},
    **{op: (_F,) for op in ["floor", "ceil", "is_finite", "nextafter", "erf", "erfc", "erf_inv",
                            "lgamma", "digamma", "cbrt", "atan2", "gelu", "reduce_precision"]},
    **{op: (_F, _I, _B) for op in ["lt", "le", "gt", "ge"]},
    **{op: (_I, _B) for op in ["not", "and", "or", "xor"]},
    **{op: (_I,) for op in ["population_count", "shift_left", "shift_right_arithmetic",
                            "shift_right_logical"]},
    **{op: (_C,) for op in ["real", "imag"]},
}


def dtype_kind(dtype: str) -> str:
    """float | complex | int | bool."""
    return _C if dtype in COMPLEX_DTYPES else _I if dtype in INT_DTYPES else \
        _B if dtype == "bool" else _F


def _accepting(op, rule, kinds):
    def checked(types, attrs):
        for t in types:
            if dtype_kind(t.dtype) not in kinds:
                raise OpTypeError(f"{op} takes {' or '.join(kinds)} element types, got {t}")
        return rule(types, attrs)
    return checked


def define_op(name, type_rule, **kw):
    """Register an elementwise op, with the element-type check of ``ACCEPTS``."""
    if name in ACCEPTS:
        type_rule = _accepting(name, type_rule, ACCEPTS[name])
    return _define_op(name, type_rule, **kw)


def _same(types, attrs):
    return [types[0]]


def _float_unary(op):
    def rule(types, attrs):
        require(is_float(types[0].dtype) or types[0].dtype in ("c64", "c128"),
                f"{op} needs a floating-point input, got {types[0]}")
        return [types[0]]
    return rule


for _op in UNARY_FLOAT:
    define_op(_op, _float_unary(_op), traits=["elementwise", "unary"],
              doc=f"Element-wise {_op}.")
for _op in UNARY_ANY + UNARY_ROUNDING:
    define_op(_op, _same, traits=["elementwise", "unary"], doc=f"Element-wise {_op}.")

define_op("round", _same, traits=["elementwise", "unary"],
          attrs=[AttrSpec("method", "str", "half_to_even", "half_to_even | half_away_from_zero")],
          doc="Round to integral values.")
define_op("gelu", _float_unary("gelu"), traits=["elementwise", "unary"],
          attrs=[AttrSpec("approximate", "bool", False, "tanh approximation")],
          doc="Gaussian error linear unit.")
define_op("leaky_relu", _float_unary("leaky_relu"), traits=["elementwise", "unary"],
          attrs=[AttrSpec("alpha", "float", 0.01)], doc="max(x, alpha*x).")
define_op("elu", _float_unary("elu"), traits=["elementwise", "unary"],
          attrs=[AttrSpec("alpha", "float", 1.0)], doc="Exponential linear unit.")
define_op("integer_pow", _same, traits=["elementwise", "unary"],
          attrs=[AttrSpec("y", "int", doc="integer exponent")], doc="x ** y for a constant int y.")
define_op("not", _same, traits=["elementwise", "unary"], doc="Logical / bitwise not.")
define_op("population_count", _same, traits=["elementwise", "unary"], doc="Set bits.")
define_op("is_finite", lambda t, a: [t[0].with_dtype("bool")], traits=["elementwise", "unary"],
          doc="True where x is neither inf nor nan.")
define_op("is_nan", lambda t, a: [t[0].with_dtype("bool")], traits=["elementwise", "unary"],
          doc="True where x is nan.")
define_op("is_inf", lambda t, a: [t[0].with_dtype("bool")], traits=["elementwise", "unary"],
          attrs=[AttrSpec("detect_positive", "bool", True), AttrSpec("detect_negative", "bool", True)],
          doc="True where x is +/-inf.")
define_op("stop_gradient", _same, traits=["elementwise", "unary"],
          doc="Identity whose derivative is zero (jax.lax.stop_gradient).")


def _complex_part(types, attrs):
    return [types[0].with_dtype({"c64": "f32", "c128": "f64"}.get(types[0].dtype, types[0].dtype))]


define_op("real", _complex_part, traits=["elementwise", "unary"], doc="Real part.")
define_op("imag", _complex_part, traits=["elementwise", "unary"], doc="Imaginary part.")


def _binary(op):
    def rule(types, attrs):
        dtype = same_dtype(types, op)
        return [types[0].with_shape(broadcast_shapes(types[0].shape, types[1].shape)).with_dtype(dtype)]
    return rule


def _compare(op):
    def rule(types, attrs):
        same_dtype(types, op)
        return [types[0].with_shape(broadcast_shapes(types[0].shape, types[1].shape)).with_dtype("bool")]
    return rule


for _op in BINARY_ARITH + BINARY_BITWISE:
    define_op(_op, _binary(_op), arity=2,
              traits=["elementwise", "binary"] + (["commutative"] if _op in COMMUTATIVE else []),
              doc=f"Element-wise {_op} with numpy broadcasting.")
for _op in COMPARE:
    define_op(_op, _compare(_op), arity=2,
              traits=["elementwise", "binary", "compare"] + (["commutative"] if _op in COMMUTATIVE else []),
              doc=f"Element-wise comparison {_op}, giving bool.")


def _select(types, attrs):
    pred, a, b = types
    require(pred.dtype == "bool", f"select: condition must be bool, got {pred}")
    dtype = same_dtype([a, b], "select")
    return [a.with_shape(broadcast_shapes(pred.shape, a.shape, b.shape)).with_dtype(dtype)]


define_op("select", _select, arity=3, traits=["elementwise"],
          doc="where(cond, x, y) with numpy broadcasting.")


def _clamp(types, attrs):
    lo, x, hi = types
    dtype = same_dtype(types, "clamp")
    shape = broadcast_shapes(lo.shape, x.shape, hi.shape)
    require(tuple(shape) == tuple(x.shape), f"clamp: bounds {lo}, {hi} must broadcast to x {x}")
    return [x.with_dtype(dtype)]


define_op("clamp", _clamp, arity=3, traits=["elementwise"], doc="clamp(lo, x, hi).")


def _convert(types, attrs):
    return [types[0].with_dtype(attrs["dtype"])]


define_op("convert", _convert, traits=["elementwise", "unary"],
          attrs=[AttrSpec("dtype", "dtype", doc="target element type")],
          doc="Cast to another element type (round to nearest, saturating for float8).")
define_op("bitcast_convert", _convert, traits=["unary"],
          attrs=[AttrSpec("dtype", "dtype", doc="target element type of the same width")],
          doc="Reinterpret bits as another element type of the same width.")
define_op("reduce_precision", _float_unary("reduce_precision"), traits=["elementwise", "unary"],
          attrs=[AttrSpec("exponent_bits", "int"), AttrSpec("mantissa_bits", "int")],
          doc="Round to a narrower float format, keeping the type.")
