"""The op registry and the lowering table agree; each core op matches a float64 numpy oracle."""
from __future__ import annotations

import math

import jax
import ml_dtypes
import numpy as np
import pytest
from scipy import special

from tensorsmith import codegen, ir
from tensorsmith.ir import GraphBuilder, OpTypeError, TensorType

CORE_MODULES = {f"tensorsmith.ir.ops.{m}" for m in ("elementwise", "shape", "reduce")}


def _module_of(od) -> str:
    rule = od.type_rule
    while hasattr(rule, "func"):  # functools.partial
        rule = rule.func
    mod = getattr(rule, "__module__", "")
    # rules wrapped by a module-local helper (closures) still carry that module's name
    return mod


# --- the two tables -----------------------------------------------------------------------
def test_every_op_has_a_lowering_and_a_type_rule():
    missing = sorted(op for op in ir.OPS if op not in codegen.LOWERINGS)
    assert not missing, f"ops without a lowering in codegen.LOWERINGS: {missing}"
    no_rule = sorted(op for op, od in ir.OPS.items() if not callable(od.type_rule))
    assert not no_rule, f"ops without a type rule: {no_rule}"


def test_every_lowering_has_an_op():
    orphans = sorted(op for op in codegen.LOWERINGS if op not in ir.OPS)
    assert not orphans, f"lowerings for ops the registry does not declare: {orphans}"


def test_every_op_has_a_doc_and_attr_kinds():
    kinds = {"int", "float", "bool", "str", "dtype", "ints", "floats", "any", "dim"}
    for name, od in ir.OPS.items():
        assert od.doc, f"op {name!r} has no doc"
        for a in od.attrs:
            assert a.kind in kinds, f"op {name!r} attribute {a.name!r} has unknown kind {a.kind!r}"


def _required_attrs(od):
    defaults = {"dtype": "f32", "y": 2, "axes": (0,), "axis": 0, "exponent_bits": 5,
                "mantissa_bits": 10}
    return {a.name: defaults[a.name] for a in od.attrs if a.required and a.name in defaults}


# ops whose required attributes the check can supply (others get oracle cases below)
_GENERIC = sorted(op for op, od in ir.OPS.items()
                  if od.traits & {"elementwise", "reduction", "scan"}
                  and od.arity[0] >= 1 and "region" not in od.traits
                  and all(a.name in _required_attrs(od) for a in od.attrs if a.required))


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
@pytest.mark.parametrize("op", _GENERIC)
def test_type_rule_accepts_only_what_lowers(op):
    """For each dtype the rule accepts, the lowering runs and gives the declared types."""
    od = ir.OPS[op]
    attrs = _required_attrs(od)
    accepted = 0
    for dt in ["f32", "bf16", "i32", "u8", "bool", "c64"]:
        b = GraphBuilder("probe")
        xs = [b.input(TensorType((3, 2), "bool" if op == "select" and i == 0 else dt), f"x{i}")
              for i in range(od.arity[0])]
        try:
            out = b.op(op, *xs, **attrs)
        except OpTypeError:
            continue
        accepted += 1
        g = b.build(list(out) if isinstance(out, tuple) else [out])
        specs = [jax.ShapeDtypeStruct((3, 2), ir.numpy_dtype(v.dtype)) for v in g.inputs]
        got = jax.eval_shape(codegen.to_jax(g), (), *specs)
        for v, o in zip(g.outputs, got):
            assert TensorType(o.shape, ir.dtype_name(o.dtype)) == v.type, (op, dt)
    assert accepted, f"{op} accepts no element type at all"


# --- numerics against float64 numpy -------------------------------------------------------
RNG = np.random.default_rng(0)


def U(lo, hi, shape=(3, 4), dtype=np.float32):
    return RNG.uniform(lo, hi, shape).astype(dtype)


def I(lo, hi, shape=(3, 4), dtype=np.int32):  # noqa: E743
    return RNG.integers(lo, hi, shape).astype(dtype)


def B(shape=(3, 4)):
    return RNG.random(shape) < 0.5


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0, x)


def _relu6(x):
    return np.clip(x, 0, 6)


def _selu(x):
    a, s = 1.6732632423543772, 1.0507009873554805
    return s * np.where(x > 0, x, a * np.expm1(x))


def _round_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


HALVES = np.array([[-2.5, -1.5, -0.5, 0.5], [1.5, 2.5, 0.4, -0.6], [3.7, -3.2, 0.0, 7.5]],
                  np.float32)
SPECIAL = np.array([[1.0, np.inf, -np.inf, np.nan], [0.0, -2.0, 3.0, np.nan], [5, 6, 7, 8]],
                   np.float32)

# (id, op, inputs, attrs, oracle(*float64 inputs), rtol)
UNARY = [
    ("exp", U(-3, 3), np.exp), ("exp2", U(-3, 3), np.exp2), ("expm1", U(-1, 1), np.expm1),
    ("log", U(0.1, 5), np.log), ("log1p", U(-0.5, 3), np.log1p), ("sqrt", U(0, 5), np.sqrt),
    ("rsqrt", U(0.1, 5), lambda x: 1 / np.sqrt(x)), ("cbrt", U(-5, 5), np.cbrt),
    ("tanh", U(-3, 3), np.tanh), ("logistic", U(-5, 5), _sigmoid), ("sin", U(-3, 3), np.sin),
    ("cos", U(-3, 3), np.cos), ("tan", U(-1.2, 1.2), np.tan), ("asin", U(-0.9, 0.9), np.arcsin),
    ("acos", U(-0.9, 0.9), np.arccos), ("atan", U(-3, 3), np.arctan),
    ("sinh", U(-3, 3), np.sinh), ("cosh", U(-3, 3), np.cosh), ("asinh", U(-3, 3), np.arcsinh),
    ("acosh", U(1.1, 4), np.arccosh), ("atanh", U(-0.9, 0.9), np.arctanh),
    ("erf", U(-2, 2), special.erf), ("erfc", U(-2, 2), special.erfc),
    ("erf_inv", U(-0.9, 0.9), special.erfinv), ("lgamma", U(0.5, 5), special.gammaln),
    ("digamma", U(0.5, 5), special.digamma), ("relu6", U(-8, 8), _relu6),
    ("silu", U(-5, 5), lambda x: x * _sigmoid(x)), ("softplus", U(-5, 5), _softplus),
    ("softsign", U(-5, 5), lambda x: x / (1 + np.abs(x))), ("selu", U(-3, 3), _selu),
    ("mish", U(-3, 3), lambda x: x * np.tanh(_softplus(x))),
    ("hard_sigmoid", U(-5, 5), lambda x: _relu6(x + 3) / 6),
    ("hard_swish", U(-5, 5), lambda x: x * _relu6(x + 3) / 6),
    ("neg", U(-3, 3), np.negative), ("abs", U(-3, 3), np.abs), ("sign", HALVES, np.sign),
    ("square", U(-3, 3), np.square), ("relu", U(-3, 3), lambda x: np.maximum(x, 0)),
    ("reciprocal", U(0.5, 3), np.reciprocal), ("floor", HALVES, np.floor),
    ("ceil", HALVES, np.ceil), ("stop_gradient", U(-3, 3), lambda x: x),
]
CASES = [(f"{op}", op, [x], {}, fn, 2e-5) for op, x, fn in UNARY]
CASES += [
    ("abs_i32", "abs", [I(-9, 9)], {}, np.abs, 0),
    ("abs_u8", "abs", [I(0, 200, dtype=np.uint8)], {}, np.abs, 0),
    ("neg_i32", "neg", [I(-9, 9)], {}, np.negative, 0),
    ("round_even", "round", [HALVES], {"method": "half_to_even"}, np.round, 0),
    ("round_away", "round", [HALVES], {"method": "half_away_from_zero"}, _round_away, 0),
    ("gelu_exact", "gelu", [U(-3, 3)], {"approximate": False},
     lambda x: 0.5 * x * (1 + special.erf(x / math.sqrt(2))), 2e-5),
    ("gelu_tanh", "gelu", [U(-3, 3)], {"approximate": True},
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), 2e-5),
    ("leaky_relu", "leaky_relu", [U(-3, 3)], {"alpha": 0.2}, lambda x: np.where(x > 0, x, 0.2 * x), 1e-6),
    ("elu", "elu", [U(-3, 3)], {"alpha": 1.5}, lambda x: np.where(x > 0, x, 1.5 * np.expm1(x)), 2e-5),
    ("integer_pow3", "integer_pow", [U(-2, 2)], {"y": 3}, lambda x: x ** 3, 2e-6),
    ("integer_pow_neg", "integer_pow", [U(0.5, 2)], {"y": -2}, lambda x: x ** -2.0, 2e-6),
    ("not_bool", "not", [B()], {}, np.logical_not, 0),
    ("not_i32", "not", [I(-9, 9)], {}, np.invert, 0),
    ("popcount", "population_count", [I(0, 1 << 20)], {},
     lambda x: np.vectorize(lambda v: bin(int(v)).count("1"))(x), 0),
    ("is_finite", "is_finite", [SPECIAL], {}, np.isfinite, 0),
    ("is_nan", "is_nan", [SPECIAL], {}, np.isnan, 0),
    ("is_inf", "is_inf", [SPECIAL], {}, np.isinf, 0),
    ("is_posinf", "is_inf", [SPECIAL], {"detect_negative": False}, np.isposinf, 0),
    ("real", "real", [(U(-1, 1) + 1j * U(-1, 1)).astype(np.complex64)], {}, np.real, 0),
    ("imag", "imag", [(U(-1, 1) + 1j * U(-1, 1)).astype(np.complex64)], {}, np.imag, 0),
    ("convert_f32_i32", "convert", [U(-9, 9)], {"dtype": "i32"}, np.trunc, 0),
    ("convert_i32_f32", "convert", [I(-99, 99)], {"dtype": "f32"}, lambda x: x, 0),
    ("convert_f32_bf16", "convert", [U(-9, 9)], {"dtype": "bf16"},
     lambda x: x.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64), 0),
    ("convert_bool_f32", "convert", [B()], {"dtype": "f32"}, lambda x: x.astype(np.float64), 0),
    ("bitcast_f32_i32", "bitcast_convert", [U(-9, 9)], {"dtype": "i32"},
     lambda x: x.astype(np.float32).view(np.int32), 0),
    ("reduce_precision_f16", "reduce_precision", [U(-9, 9)], {"exponent_bits": 5, "mantissa_bits": 10},
     lambda x: x.astype(np.float16).astype(np.float64), 0),
]

BINARY = [
    ("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("max", np.maximum),
    ("min", np.minimum), ("atan2", np.arctan2),
]
for op, fn in BINARY:
    CASES.append((op, op, [U(-3, 3), U(-3, 3)], {}, fn, 2e-6))
CASES += [
    ("div", "div", [U(-3, 3), U(0.5, 3)], {}, np.divide, 2e-6),
    ("rem", "rem", [U(-9, 9), U(0.5, 3)], {}, np.fmod, 2e-6),
    ("rem_i32", "rem", [I(-20, 20), I(1, 7)], {}, np.fmod, 0),
    ("div_i32", "div", [I(-20, 20), I(1, 7)], {}, lambda a, b: np.trunc(a / b), 0),
    ("pow", "pow", [U(0.5, 3), U(-2, 2)], {}, np.power, 1e-5),
    ("pow_i32", "pow", [I(-3, 4), I(0, 5)], {}, np.power, 0),
    ("nextafter", "nextafter", [U(-3, 3), U(-3, 3)], {},
     lambda a, b: np.nextafter(a.astype(np.float32), b.astype(np.float32)), 0),
    ("add_broadcast", "add", [U(-3, 3, (3, 1, 4)), U(-3, 3, (5, 4))], {}, np.add, 2e-6),
    ("mul_scalar", "mul", [U(-3, 3, ()), U(-3, 3, (2, 3))], {}, np.multiply, 2e-6),
    ("max_nan", "max", [SPECIAL, np.full_like(SPECIAL, 2.0)], {}, np.maximum, 0),
    ("and_bool", "and", [B(), B()], {}, np.logical_and, 0),
    ("or_bool", "or", [B(), B()], {}, np.logical_or, 0),
    ("xor_bool", "xor", [B(), B()], {}, np.logical_xor, 0),
    ("and_i32", "and", [I(-99, 99), I(-99, 99)], {}, np.bitwise_and, 0),
    ("or_i32", "or", [I(-99, 99), I(-99, 99)], {}, np.bitwise_or, 0),
    ("xor_i32", "xor", [I(-99, 99), I(-99, 99)], {}, np.bitwise_xor, 0),
    ("shl", "shift_left", [I(-99, 99), I(0, 20)], {}, lambda a, b: (a.astype(np.int32) << b.astype(np.int32)), 0),
    ("shra", "shift_right_arithmetic", [I(-999, 999), I(0, 31)], {},
     lambda a, b: a.astype(np.int32) >> b.astype(np.int32), 0),
    ("shrl", "shift_right_logical", [I(-999, 999), I(0, 31)], {},
     lambda a, b: (a.astype(np.int32).view(np.uint32) >> b.astype(np.uint32)).view(np.int32), 0),
]
for op, fn in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
               ("gt", np.greater), ("ge", np.greater_equal)]:
    a = I(-2, 2).astype(np.float32)  # small ints: equal values occur
    CASES.append((op, op, [a, I(-2, 2, (4,)).astype(np.float32)], {}, fn, 0))
CASES += [
    ("select", "select", [B(), U(-3, 3), U(-3, 3, (4,))], {}, np.where, 0),
    ("clamp", "clamp", [np.float32(-0.5), U(-3, 3), np.float32(1.0)], {},
     lambda lo, x, hi: np.clip(x, lo, hi), 0),
    ("clamp_array", "clamp", [U(-2, 0), U(-3, 3), U(0, 2)], {}, lambda lo, x, hi: np.minimum(np.maximum(x, lo), hi), 0),
]

X = U(-3, 3, (2, 3, 4))
CASES += [
    ("reshape", "reshape", [X], {"shape": (6, 4)}, lambda x: x.reshape(6, 4), 0),
    ("transpose", "transpose", [X], {"permutation": (2, 0, 1)}, lambda x: x.transpose(2, 0, 1), 0),
    ("broadcast_in_dim", "broadcast_in_dim", [U(-1, 1, (3, 1))],
     {"shape": (2, 3, 5), "broadcast_dimensions": (1, 2)},
     lambda x: np.broadcast_to(x[None], (2, 3, 5)), 0),
    ("slice", "slice", [X], {"start": (0, 1, 0), "limit": (2, 3, 4), "strides": (1, 1, 3)},
     lambda x: x[0:2, 1:3, 0:4:3], 0),
    ("dynamic_slice", "dynamic_slice", [X, np.int32(1), np.int32(5), np.int32(1)],
     {"sizes": (1, 2, 2)},  # start 5 is clamped to 3 - 2 = 1
     lambda x, i, j, k: x[1:2, 1:3, 1:3], 0),
    ("dynamic_update_slice", "dynamic_update_slice",
     [X, U(5, 6, (1, 2, 2)), np.int32(1), np.int32(0), np.int32(2)], {},
     lambda x, u, i, j, k: np.concatenate([x[:1], np.concatenate(
         [np.concatenate([x[1:, :2, :2], u], 2), x[1:, 2:]], 1)], 0), 0),
    ("concatenate", "concatenate", [X, U(-1, 1, (2, 3, 2))], {"axis": -1},
     lambda a, b: np.concatenate([a, b], -1), 0),
    ("pad", "pad", [U(-1, 1, (3, 4)), np.float32(9.0)], {"low": (1, -1), "high": (0, 2), "interior": (1, 0)},
     lambda x, v: np.pad(np.insert(x, [1, 2], v, axis=0), ((1, 0), (0, 2)), constant_values=v)[:, 1:], 0),
    ("squeeze", "squeeze", [U(-1, 1, (3, 1, 4, 1))], {"axes": (1, -1)}, lambda x: x.reshape(3, 4), 0),
    ("expand_dims", "expand_dims", [U(-1, 1, (3, 4))], {"axes": (0, -1)}, lambda x: x[None, :, :, None], 0),
    ("rev", "rev", [X], {"axes": (0, 2)}, lambda x: x[::-1, :, ::-1], 0),
]
NULLARY = [
    ("iota", "iota", {"dtype": "i32", "shape": (3, 4), "axis": 1},
     lambda: np.broadcast_to(np.arange(4), (3, 4))),
    ("constant", "constant", {"value": 2.5, "dtype": "f32", "shape": (2, 3)},
     lambda: np.full((2, 3), 2.5)),
]

for op, fn in [("reduce_sum", np.sum), ("reduce_max", np.max), ("reduce_min", np.min),
               ("reduce_prod", np.prod)]:
    CASES.append((op, op, [U(0.5, 1.5, (2, 3, 4))], {"axes": (0, 2)}, lambda x, f=fn: f(x, axis=(0, 2)), 2e-6))
    CASES.append((op + "_keep", op, [U(0.5, 1.5, (2, 3, 4))], {"axes": (-1,), "keepdims": True},
                  lambda x, f=fn: f(x, axis=-1, keepdims=True), 2e-6))
ARG = np.array([[1, 3, 3, 0], [2, 2, 1, 2], [0, 5, 5, 5]], np.float32)
CASES += [
    ("reduce_and", "reduce_and", [B((3, 4))], {"axes": (1,)}, lambda x: np.all(x, 1), 0),
    ("reduce_or", "reduce_or", [B((3, 4))], {"axes": (0, 1)}, np.any, 0),
    ("reduce_xor_i32", "reduce_xor", [I(0, 99)], {"axes": (1,)}, lambda x: np.bitwise_xor.reduce(x, 1), 0),
    ("reduce_max_i32", "reduce_max", [I(-99, 99)], {"axes": (0,)}, lambda x: x.max(0), 0),
    ("argmax", "argmax", [ARG], {"axis": 1}, lambda x: np.argmax(x, 1), 0),
    ("argmax_last", "argmax", [ARG], {"axis": 1, "select_last_index": True},
     lambda x: 3 - np.argmax(x[:, ::-1], 1), 0),
    ("argmin_keep", "argmin", [ARG], {"axis": 0, "keepdims": True}, lambda x: np.argmin(x, 0)[None], 0),
    ("cumsum", "cumsum", [U(-1, 1)], {"axis": 1}, lambda x: np.cumsum(x, 1), 2e-6),
    ("cumsum_rev", "cumsum", [U(-1, 1)], {"axis": 1, "reverse": True},
     lambda x: np.cumsum(x[:, ::-1], 1)[:, ::-1], 2e-6),
    ("cumsum_excl", "cumsum", [U(-1, 1)], {"axis": 1, "exclusive": True},
     lambda x: np.cumsum(x, 1) - x, 2e-6),
    ("cumsum_excl_rev", "cumsum", [U(-1, 1)], {"axis": 0, "exclusive": True, "reverse": True},
     lambda x: np.cumsum(x[::-1], 0)[::-1] - x, 2e-6),
    ("cumprod", "cumprod", [U(0.5, 1.5)], {"axis": 0}, lambda x: np.cumprod(x, 0), 2e-6),
    ("cummax", "cummax", [U(-1, 1)], {"axis": 1}, lambda x: np.maximum.accumulate(x, 1), 0),
    ("cummin_rev", "cummin", [U(-1, 1)], {"axis": 1, "reverse": True},
     lambda x: np.minimum.accumulate(x[:, ::-1], 1)[:, ::-1], 0),
    ("cummax_excl_i32", "cummax", [I(-9, 9)], {"axis": 1, "exclusive": True},
     lambda x: np.concatenate([np.full((3, 1), np.iinfo(np.int32).min),
                               np.maximum.accumulate(x, 1)[:, :-1]], 1), 0),
    ("cumlogsumexp", "cumlogsumexp", [U(-1, 1)], {"axis": 1}, lambda x: np.logaddexp.accumulate(x, 1), 2e-6),
    ("sort", "sort", [U(-1, 1)], {"axis": 1}, lambda x: np.sort(x, 1), 0),
    ("sort_desc_i32", "sort", [I(-9, 9)], {"axis": 0, "descending": True}, lambda x: -np.sort(-x, 0), 0),
    ("top_k", "top_k", [U(-1, 1, (3, 6))], {"k": 2},
     lambda x: (-np.sort(-x, 1)[:, :2], np.argsort(-x, 1, kind="stable")[:, :2]), 0),
    ("top_k_smallest_axis0", "top_k", [U(-1, 1, (5, 3))], {"k": 2, "axis": 0, "largest": False},
     lambda x: (np.sort(x, 0)[:2], np.argsort(x, 0, kind="stable")[:2]), 0),
]
NN = U(-1, 1, (2, 3, 5))
CASES += [
    ("dot_general", "dot_general", [U(-1, 1, (2, 3, 4)), U(-1, 1, (2, 4, 5))],
     {"contracting_dims": ((2,), (1,)), "batch_dims": ((0,), (0,))},
     lambda a, b: np.einsum("bij,bjk->bik", a, b), 2e-6),
    ("softmax", "softmax", [NN], {"axis": 1},
     lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True), 2e-6),
    ("log_softmax", "log_softmax", [NN], {},
     lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True)), 2e-6),
    ("batch_norm", "batch_norm", [NN, U(0.5, 2, (3,)), U(-1, 1, (3,)), U(-1, 1, (3,)), U(0.5, 2, (3,))],
     {"epsilon": 1e-3, "axis": 1},
     lambda x, s, b, m, v: (x - m[:, None]) * s[:, None] / np.sqrt(v[:, None] + 1e-3) + b[:, None], 2e-6),
    ("reduce_window_max", "reduce_window", [U(-1, 1, (1, 5, 5, 1))],
     {"kind": "max", "window_dimensions": (1, 2, 2, 1), "window_strides": (1, 2, 2, 1),
      "padding": ((0, 0), (0, 1), (0, 1), (0, 0))},
     lambda x: np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
     .reshape(1, 3, 2, 3, 2, 1).max(axis=(2, 4)), 0),
    ("reduce_window_sum", "reduce_window", [U(-1, 1, (4, 6))],
     {"kind": "sum", "window_dimensions": (2, 3), "window_strides": (1, 3)},
     lambda x: np.lib.stride_tricks.sliding_window_view(x, (2, 3))[:, ::3].sum(axis=(2, 3)), 2e-6),
]


def _run(op, inputs, attrs):
    b = GraphBuilder(op)
    vals = [b.input(TensorType(np.shape(x), ir.dtype_name(np.asarray(x).dtype)), f"x{i}")
            for i, x in enumerate(inputs)]
    out = b.op(op, *vals, **attrs)
    g = b.build(list(out) if isinstance(out, tuple) else [out])
    ir.verify(g)
    got = codegen.executor(g)(*[np.asarray(x) for x in inputs])
    for v, o in zip(g.outputs, got):  # the lowering gives what the type rule promised
        assert o.shape == tuple(v.type.shape) and ir.dtype_name(o.dtype) == v.type.dtype
    return got


def _f64(x):
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype.kind == "f" or x.dtype == ml_dtypes.bfloat16 else x


def _compare(got, want, rtol):
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g).astype(np.float64) if np.asarray(g).dtype.kind in "fV" or \
            np.asarray(g).dtype == ml_dtypes.bfloat16 else np.asarray(g)
        w = np.asarray(w)
        assert g.shape == w.shape
        if rtol:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_numpy(case):
    _, op, inputs, attrs, oracle, rtol = case
    got = _run(op, inputs, attrs)
    _compare(got, oracle(*[_f64(x) for x in inputs]), rtol)


@pytest.mark.parametrize("case", NULLARY, ids=[c[0] for c in NULLARY])
def test_nullary_op_matches_numpy(case):
    _, op, attrs, oracle = case
    _compare(_run(op, [], attrs), oracle(), 0)


def test_oracles_cover_the_core_ops():
    """Every elementwise/shape/reduction op declared by the core modules has an oracle case."""
    covered = {c[1] for c in CASES} | {c[1] for c in NULLARY}
    core = {op for op, od in ir.OPS.items() if _module_of(od) in CORE_MODULES}
    assert len(core) > 80  # the check sees the core modules at all
    assert not sorted(core - covered), f"core ops without a numpy oracle: {sorted(core - covered)}"


def test_symbolic_shape_ops_lower_for_each_batch():
    b = GraphBuilder("sym")
    x = b.input(TensorType(("N", 3), "f32"), "x")
    flat = b.op("reshape", x, shape=("3*N",))
    idx = b.op("iota", dtype="f32", shape=("3*N",), axis=0)
    g = b.build([b.op("add", flat, idx), b.op("slice", x, start=(0, 1), limit=("N", 3))])
    run = codegen.executor(g)
    for n in (1, 4):
        xv = U(-1, 1, (n, 3))
        y, s = run(xv)
        np.testing.assert_array_equal(y, xv.reshape(-1) + np.arange(3 * n, dtype=np.float32))
        np.testing.assert_array_equal(s, xv[:, 1:])
