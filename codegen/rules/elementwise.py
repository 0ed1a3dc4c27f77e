"""Lowerings of element-wise ops."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ...ir import numpy_dtype
from ..lowering import lowering

_UNARY = {
    "neg": lax.neg, "sign": lax.sign, "floor": lax.floor, "ceil": lax.ceil,
    "exp": lax.exp, "exp2": lax.exp2, "expm1": lax.expm1, "log": lax.log, "log1p": lax.log1p,
    "sqrt": lax.sqrt, "rsqrt": lax.rsqrt, "cbrt": lax.cbrt, "tanh": lax.tanh,
    "logistic": lax.logistic, "sin": lax.sin, "cos": lax.cos, "tan": lax.tan, "asin": lax.asin,
    "acos": lax.acos, "atan": lax.atan, "sinh": lax.sinh, "cosh": lax.cosh, "asinh": lax.asinh,
    "acosh": lax.acosh, "atanh": lax.atanh, "erf": lax.erf, "erfc": lax.erfc,
    "erf_inv": lax.erf_inv, "lgamma": lax.lgamma, "digamma": lax.digamma,
    "square": lax.square, "not": lax.bitwise_not, "population_count": lax.population_count,
    "is_finite": lax.is_finite, "stop_gradient": lax.stop_gradient, "is_nan": jnp.isnan, "real": lax.real, "imag": lax.imag,
    "relu6": jax.nn.relu6, "silu": jax.nn.silu, "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign, "selu": jax.nn.selu, "mish": jax.nn.mish,
    "hard_sigmoid": jax.nn.hard_sigmoid, "hard_swish": jax.nn.hard_swish,
}


def _unary(fn):
    return lambda ctx, node, x: fn(x)


for _op, _fn in _UNARY.items():
    lowering(_op)(_unary(_fn))


@lowering("abs")
def _abs(ctx, node, x):
    return x if jnp.issubdtype(x.dtype, jnp.unsignedinteger) else lax.abs(x)


@lowering("relu")
def _relu(ctx, node, x):
    # jax.nn.relu, not max(x, 0): its derivative at 0 is 0 as JAX's (max splits it: 0.5)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return lax.max(x, jnp.zeros((), x.dtype))
    return jax.nn.relu(x)


@lowering("reciprocal")
def _reciprocal(ctx, node, x):
    return lax.div(jnp.ones((), x.dtype), x)


@lowering("round")
def _round(ctx, node, x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    method = node.attrs.get("method", "half_to_even")
    return lax.round(x, lax.RoundingMethod.TO_NEAREST_EVEN if method == "half_to_even"
                     else lax.RoundingMethod.AWAY_FROM_ZERO)


@lowering("gelu")
def _gelu(ctx, node, x):
    return jax.nn.gelu(x, approximate=node.attrs.get("approximate", False))


@lowering("leaky_relu")
def _leaky_relu(ctx, node, x):
    return jax.nn.leaky_relu(x, node.attrs.get("alpha", 0.01))


@lowering("elu")
def _elu(ctx, node, x):
    return jax.nn.elu(x, node.attrs.get("alpha", 1.0))


@lowering("integer_pow")
def _integer_pow(ctx, node, x):
    return lax.integer_pow(x, node.attrs["y"])


@lowering("is_inf")
def _is_inf(ctx, node, x):
    pos, neg = node.attrs.get("detect_positive", True), node.attrs.get("detect_negative", True)
    if pos and neg:
        return jnp.isinf(x)
    if pos:
        return jnp.isposinf(x)
    if neg:
        return jnp.isneginf(x)
    return jnp.zeros(x.shape, bool)


@lowering("convert")
def _convert(ctx, node, x):
    return lax.convert_element_type(x, numpy_dtype(node.attrs["dtype"]))


@lowering("bitcast_convert")
def _bitcast(ctx, node, x):
    return lax.bitcast_convert_type(x, numpy_dtype(node.attrs["dtype"]))


@lowering("reduce_precision")
def _reduce_precision(ctx, node, x):
    return lax.reduce_precision(x, node.attrs["exponent_bits"], node.attrs["mantissa_bits"])


def _broadcast(*xs):
    shape = jnp.broadcast_shapes(*(x.shape for x in xs))
    return [x if x.shape == shape else jnp.broadcast_to(x, shape) for x in xs]


def _pow(a, b):
    if jnp.issubdtype(a.dtype, jnp.integer):
        return jnp.power(a, b)
    return lax.pow(a, b)


_BINARY = {
    "add": lax.add, "sub": lax.sub, "mul": lax.mul, "div": lax.div, "rem": lax.rem,
    "pow": _pow, "max": lax.max, "min": lax.min, "atan2": lax.atan2,
    "nextafter": lax.nextafter, "and": lax.bitwise_and, "or": lax.bitwise_or,
    "xor": lax.bitwise_xor, "shift_left": lax.shift_left,
    "shift_right_arithmetic": lax.shift_right_arithmetic,
    "shift_right_logical": lax.shift_right_logical,
    "eq": lax.eq, "ne": lax.ne, "lt": lax.lt, "le": lax.le, "gt": lax.gt, "ge": lax.ge,
}


def _binary(fn):
    return lambda ctx, node, a, b: fn(*_broadcast(a, b))


for _op, _fn in _BINARY.items():
    lowering(_op)(_binary(_fn))


@lowering("select")
def _select(ctx, node, c, a, b):
    return jnp.where(c, a, b)


@lowering("clamp")
def _clamp(ctx, node, lo, x, hi):
    return jnp.minimum(jnp.maximum(x, lo), hi) if lo.shape or hi.shape else lax.clamp(lo, x, hi)
