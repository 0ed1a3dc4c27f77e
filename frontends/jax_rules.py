"""How each JAX primitive becomes IR: one rule per primitive (see jax.py for the walker)."""
from __future__ import annotations

import numpy as np

from ..errors import ModelImportError
from ..ir import dtype_name
from ..ir.dims import from_jax

# Primitives that only pass values through (no computation once traced for inference).
# stop_gradient is not one of them: it is kept as an op so gradients through the compiled
# graph equal JAX's own (logsumexp and softmax stop the gradient of their max).
IDENTITY = {"copy", "copy_p", "sharding_constraint", "device_put",
            "optimization_barrier", "mesh_cast", "reshard", "name", "pvary"}


def _closed(key):
    def get(params):
        j = params[key]
        return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, ())
    return get


# Calls whose body is inlined (differentiation wrappers carry no meaning for inference).
INLINE = {"custom_jvp_call": _closed("call_jaxpr"), "custom_vjp_call": _closed("call_jaxpr"),
          "custom_vjp_call_jaxpr": _closed("fun_jaxpr"), "remat": _closed("jaxpr"),
          "checkpoint": _closed("jaxpr"), "closed_call": _closed("call_jaxpr"),
          "core_call": _closed("call_jaxpr")}
# Named calls kept as composites.
COMPOSITE = {"pjit": _closed("jaxpr"), "jit": _closed("jaxpr")}

PRIMITIVES: dict = {}


def rule(*names):
    def deco(fn):
        for n in names:
            PRIMITIVES[n] = fn
        return fn
    return deco


def _same_name(op):
    return lambda c, e, ins, loc: c.emit(op, ins, loc=loc)


_ELEMENTWISE = {
    "neg": "neg", "abs": "abs", "sign": "sign", "floor": "floor", "ceil": "ceil", "exp": "exp",
    "exp2": "exp2", "expm1": "expm1", "log": "log", "log1p": "log1p", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "cbrt": "cbrt", "tanh": "tanh", "logistic": "logistic", "sin": "sin",
    "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan", "sinh": "sinh",
    "cosh": "cosh", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "erf": "erf",
    "erfc": "erfc", "erf_inv": "erf_inv", "lgamma": "lgamma", "digamma": "digamma",
    "square": "square", "not": "not", "population_count": "population_count",
    "is_finite": "is_finite", "real": "real", "imag": "imag", "stop_gradient": "stop_gradient",
    "add": "add", "sub": "sub", "mul": "mul", "div": "div", "rem": "rem", "pow": "pow",
    "max": "max", "min": "min", "atan2": "atan2", "nextafter": "nextafter", "and": "and",
    "or": "or", "xor": "xor", "shift_left": "shift_left",
    "shift_right_arithmetic": "shift_right_arithmetic",
    "shift_right_logical": "shift_right_logical", "eq": "eq", "ne": "ne", "lt": "lt",
    "le": "le", "gt": "gt", "ge": "ge", "clamp": "clamp",
}
for _prim, _op in _ELEMENTWISE.items():
    PRIMITIVES[_prim] = _same_name(_op)


def _dtype(x) -> str:
    return dtype_name(np.dtype(x))


@rule("integer_pow")
def _integer_pow(c, e, ins, loc):
    return c.emit("integer_pow", ins, loc=loc, y=e.params["y"])


@rule("round")
def _round(c, e, ins, loc):
    method = int(e.params.get("rounding_method", 0))
    return c.emit("round", ins, loc=loc, method="half_to_even" if method == 1 else "half_away_from_zero")


@rule("convert_element_type")
def _convert(c, e, ins, loc):
    dtype = _dtype(e.params["new_dtype"])
    if dtype == ins[0].dtype:
        return ins[0]
    return c.emit("convert", ins, loc=loc, dtype=dtype)


@rule("bitcast_convert_type")
def _bitcast(c, e, ins, loc):
    return c.emit("bitcast_convert", ins, loc=loc, dtype=_dtype(e.params["new_dtype"]))


@rule("reduce_precision")
def _reduce_precision(c, e, ins, loc):
    return c.emit("reduce_precision", ins, loc=loc, exponent_bits=e.params["exponent_bits"],
                  mantissa_bits=e.params["mantissa_bits"])


@rule("select_n")
def _select_n(c, e, ins, loc):
    pred, *cases = ins
    if len(cases) == 1:
        return cases[0]
    if pred.dtype == "bool":
        return c.emit("select", [pred, cases[1], cases[0]], loc=loc)
    out = cases[0]
    for i, case in enumerate(cases[1:], start=1):
        k = c.emit("constant", [], value=i, dtype=pred.dtype)
        out = c.emit("select", [c.emit("eq", [pred, k], loc=loc), case, out], loc=loc)
    return out


def _dims(shape):
    return tuple(from_jax(d) for d in shape)


@rule("dot_general")
def _dot_general(c, e, ins, loc):
    (lc, rc), (lb, rb) = e.params["dimension_numbers"]
    pet = e.params.get("preferred_element_type")
    pet = _dtype(pet) if pet is not None else None
    if pet == ins[0].dtype:
        pet = None
    return c.emit("dot_general", ins, loc=loc, contracting_dims=(tuple(lc), tuple(rc)),
                  batch_dims=(tuple(lb), tuple(rb)) if lb or rb else None,
                  preferred_element_type=pet)


def conv_layouts(dn, nsp: int) -> tuple[str, str, str]:
    """lax ConvDimensionNumbers (index tuples) as layout strings such as NHWC/HWIO/NHWC."""
    letters = "DHW"[-nsp:] if nsp <= 3 else "ABEFGJKLM"[:nsp]

    def spec(idx, a, b):
        s = [""] * len(idx)
        s[idx[0]], s[idx[1]] = a, b
        for k, pos in enumerate(idx[2:]):
            s[pos] = letters[k]
        return "".join(s)

    rhs_spatial = list(dn.rhs_spec[2:])
    if rhs_spatial != sorted(rhs_spatial):
        raise NotImplementedError(f"conv with kernel spatial dims out of order: {dn}")
    return spec(dn.lhs_spec, "N", "C"), spec(dn.rhs_spec, "O", "I"), spec(dn.out_spec, "N", "C")


@rule("conv_general_dilated")
def _conv(c, e, ins, loc):
    p = e.params
    nsp = ins[0].type.rank - 2
    pet = p.get("preferred_element_type")
    pet = _dtype(pet) if pet is not None else None
    if pet == ins[0].dtype:
        pet = None
    ones = (1,) * nsp
    return c.emit("conv", ins, loc=loc, dimension_numbers=conv_layouts(p["dimension_numbers"], nsp),
                  window_strides=tuple(p["window_strides"]),
                  padding=tuple(tuple(x) for x in p["padding"]),
                  lhs_dilation=None if tuple(p["lhs_dilation"]) == ones else tuple(p["lhs_dilation"]),
                  rhs_dilation=None if tuple(p["rhs_dilation"]) == ones else tuple(p["rhs_dilation"]),
                  feature_group_count=p["feature_group_count"] if p["feature_group_count"] != 1 else None,
                  batch_group_count=p["batch_group_count"] if p["batch_group_count"] != 1 else None,
                  preferred_element_type=pet)


def _reduction(op):
    def r(c, e, ins, loc):
        return c.emit(op, ins, loc=loc, axes=tuple(e.params["axes"]))
    return r


for _p in ["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
           "reduce_xor"]:
    PRIMITIVES[_p] = _reduction(_p)


def _argreduce(op):
    def r(c, e, ins, loc):
        (axis,) = e.params["axes"]
        return c.emit(op, ins, loc=loc, axis=axis, index_dtype=_dtype(e.params["index_dtype"]))
    return r


PRIMITIVES["argmax"] = _argreduce("argmax")
PRIMITIVES["argmin"] = _argreduce("argmin")


def _cumulative(op):
    def r(c, e, ins, loc):
        return c.emit(op, ins, loc=loc, axis=e.params["axis"], reverse=e.params.get("reverse") or None)
    return r


for _p in ["cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"]:
    PRIMITIVES[_p] = _cumulative(_p)


@rule("reshape")
def _reshape(c, e, ins, loc):
    if e.params.get("dimensions") is not None:
        raise NotImplementedError("reshape with dimensions is not supported")
    return c.emit("reshape", ins, loc=loc, shape=_dims(e.params["new_sizes"]))


@rule("squeeze")
def _squeeze(c, e, ins, loc):
    return c.emit("squeeze", ins, loc=loc, axes=tuple(e.params["dimensions"]))


@rule("expand_dims")
def _expand_dims(c, e, ins, loc):
    return c.emit("expand_dims", ins, loc=loc, axes=tuple(e.params["dimensions"]))


@rule("broadcast_in_dim")
def _broadcast_in_dim(c, e, ins, loc):
    return c.emit("broadcast_in_dim", ins[:1], loc=loc, shape=_dims(e.params["shape"]),
                  broadcast_dimensions=tuple(e.params["broadcast_dimensions"]))


@rule("transpose")
def _transpose(c, e, ins, loc):
    return c.emit("transpose", ins, loc=loc, permutation=tuple(e.params["permutation"]))


@rule("slice")
def _slice(c, e, ins, loc):
    p = e.params
    strides = p.get("strides")
    return c.emit("slice", ins, loc=loc, start=tuple(p["start_indices"]),
                  limit=_dims(p["limit_indices"]),
                  strides=tuple(strides) if strides and any(s != 1 for s in strides) else None)


@rule("dynamic_slice")
def _dynamic_slice(c, e, ins, loc):
    return c.emit("dynamic_slice", ins, loc=loc, sizes=_dims(e.params["slice_sizes"]))


@rule("dynamic_update_slice")
def _dynamic_update_slice(c, e, ins, loc):
    return c.emit("dynamic_update_slice", ins, loc=loc)


@rule("concatenate")
def _concatenate(c, e, ins, loc):
    return c.emit("concatenate", ins, loc=loc, axis=e.params["dimension"])


@rule("pad")
def _pad(c, e, ins, loc):
    cfg = e.params["padding_config"]
    interior = tuple(i for _, _, i in cfg)
    return c.emit("pad", ins, loc=loc, low=tuple(lo for lo, _, _ in cfg),
                  high=tuple(hi for _, hi, _ in cfg), interior=interior if any(interior) else None)


@rule("rev")
def _rev(c, e, ins, loc):
    return c.emit("rev", ins, loc=loc, axes=tuple(e.params["dimensions"]))


@rule("iota")
def _iota(c, e, ins, loc):
    return c.emit("iota", [], loc=loc, dtype=_dtype(e.params["dtype"]), shape=_dims(e.params["shape"]),
                  axis=e.params["dimension"])


@rule("split")
def _split(c, e, ins, loc):
    (x,) = ins
    axis, start, outs = e.params["axis"], 0, []
    for size in e.params["sizes"]:
        begin = [0] * x.type.rank
        end = list(x.shape)
        begin[axis], end[axis] = start, start + size
        outs.append(c.emit("slice", [x], loc=loc, start=tuple(begin), limit=tuple(end)))
        start += size
    return outs


@rule("sort")
def _sort(c, e, ins, loc):
    out = c.emit("sort", ins, loc=loc, axis=e.params["dimension"],
                 stable=bool(e.params.get("is_stable", True)), num_keys=e.params.get("num_keys", 1))
    return out if isinstance(out, tuple) else (out,)


@rule("top_k")
def _top_k(c, e, ins, loc):
    axis = e.params.get("axis", -1)
    return c.emit("top_k", ins, loc=loc, k=e.params["k"], axis=axis if axis not in (-1, ins[0].type.rank - 1) else None)


def _window(kind):
    def r(c, e, ins, loc):
        p = e.params
        rank = ins[0].type.rank
        ones = (1,) * rank
        return c.emit("reduce_window", ins[:1], loc=loc, kind=kind,
                      window_dimensions=tuple(p["window_dimensions"]),
                      window_strides=tuple(p["window_strides"]),
                      padding=tuple(tuple(x) for x in p["padding"]),
                      base_dilation=None if tuple(p["base_dilation"]) == ones else tuple(p["base_dilation"]),
                      window_dilation=None if tuple(p["window_dilation"]) == ones else tuple(p["window_dilation"]))
    return r


for _kind in ["max", "min", "sum"]:
    PRIMITIVES[f"reduce_window_{_kind}"] = _window(_kind)


@rule("dim_as_value")
def _dim_as_value(c, e, ins, loc):
    """A symbolic dim as a run-time scalar: the input sizes it is made of, read by shape_of."""
    dtype = _dtype(e.outvars[0].aval.dtype)
    return emit_dim(c, from_jax(e.params["dim"]), dtype, loc)


def emit_dim(c, d, dtype: str, loc: str = ""):
    """IR computing dim ``d`` at run time from the graph inputs' sizes (a scalar of ``dtype``)."""
    from ..ir.dims import DimExpr

    def const(v):
        return c.emit("constant", [], value=int(v), dtype=dtype)

    def symbol(name):
        for v in getattr(c, "dim_sources", ()):
            for i, s in enumerate(v.type.shape):
                if isinstance(s, DimExpr) and s.is_symbol and str(s) == name:
                    n = c.emit("shape_of", [v], start=i, end=i + 1, dtype=dtype, loc=loc)
                    return c.emit("reshape", [n], shape=(), loc=loc)
        raise OpTypeError(f"dimension symbol {name!r} is not the size of any input")

    def value(x):
        if isinstance(x, int):
            return const(x)
        total = None
        for mono, coef in x.terms:
            term = const(coef) if coef != 1 or not mono else None
            for atom, exp in mono:
                if atom[0] == "sym":
                    a = symbol(atom[1])
                else:
                    op = {"floordiv": "div", "max": "max", "min": "min"}[atom[0]]
                    a = c.emit(op, [value(atom[1]), value(atom[2])], loc=loc)
                for _ in range(exp):
                    term = a if term is None else c.emit("mul", [term, a], loc=loc)
            total = term if total is None else c.emit("add", [total, term], loc=loc)
        return total
    return value(d)


@rule("gather")
def _gather(c, e, ins, loc):
    """The gathers jnp.take(x, idx, axis=0) and x[idx] make (embedding lookups) as ``take``;
    FILL_OR_DROP (jnp's default) gives the fill value for out-of-range indices, as JAX does."""
    x, idx = ins
    p = e.params
    dn = p["dimension_numbers"]
    r, nb = x.type.rank, idx.type.rank - 1
    sizes = tuple(p["slice_sizes"])
    if (tuple(dn.collapsed_slice_dims) != (0,) or tuple(dn.start_index_map) != (0,)
            or tuple(dn.operand_batching_dims) or tuple(dn.start_indices_batching_dims)
            or idx.type.rank < 1 or idx.shape[-1] != 1 or sizes[0] != 1
            or any(s != d for s, d in zip(sizes[1:], x.shape[1:]))
            or tuple(dn.offset_dims) != tuple(range(nb, nb + r - 1))):
        raise UnsupportedGather(f"gather with {dn} and slice sizes {sizes} is not supported "
                                "(only take along axis 0: jnp.take(x, i, axis=0), x[i])")
    flat = c.emit("reshape", [idx], loc=loc, shape=tuple(idx.shape[:-1]))
    out = c.emit("take", [x, flat], loc=loc, axis=0)
    mode = str(p.get("mode", ""))
    if "FILL" not in mode:  # CLIP / PROMISE_IN_BOUNDS: take clamps
        return out
    fill = p.get("fill_value")
    if fill is None:
        fill = float("nan") if out.dtype[0] in "fbc" else 0  # jax's default fill
    zero = c.emit("constant", [], value=0, dtype=flat.dtype)
    size = c.emit("constant", [], value=x.shape[0], dtype=flat.dtype)
    valid = c.emit("and", [c.emit("ge", [flat, zero], loc=loc), c.emit("lt", [flat, size], loc=loc)],
                   loc=loc)
    valid = c.emit("broadcast_in_dim", [valid], loc=loc, shape=tuple(out.shape),
                   broadcast_dimensions=tuple(range(nb)))
    filler = c.emit("constant", [], value=fill, dtype=out.dtype)
    filler = c.emit("broadcast_in_dim", [filler], loc=loc, shape=tuple(out.shape),
                    broadcast_dimensions=())
    return c.emit("select", [valid, out, filler], loc=loc)


class UnsupportedGather(ModelImportError, NotImplementedError):
    """A gather that is not a take along axis 0."""
