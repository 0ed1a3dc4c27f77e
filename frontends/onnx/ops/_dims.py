"""Integer tensors that describe shapes: known values, and symbolic ones followed through
the IR that computed them."""
from __future__ import annotations

import weakref

import numpy as np

from ....ir.dims import DimError, DimExpr, exact_div
from ....ir.types import is_int, shape_numel

INT_MAX = 2**63 - 1


def known_ints(ctx, v, what: str) -> tuple[int, ...]:
    """An import-time-known integer tensor as a tuple of Python ints (scalars: 1-tuple)."""
    arr = ctx.require_known(v, what)
    return tuple(int(i) for i in np.asarray(arr).reshape(-1))


def static_dim(ctx, d, what: str) -> int:
    if not isinstance(d, int):
        ctx.unsupported(f"{what} must be static, got symbolic dim '{d}'")
    return d


# --- shape tensors with symbolic entries ------------------------------------------------------
# A model exported with a dynamic batch computes its Reshape/Expand targets at run time from
# Shape(x). Those values are not known, but they are known *symbolically*: following the IR
# that computed them (shape_of, slices, gathers, concats, dim arithmetic) gives dims such as
# ("batch", 64), which keeps the graph shape-polymorphic instead of asking for input values.
_DIM_OPS = ("add", "sub", "mul", "div")

_INDEX: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # scope -> value name -> node pos


def _producer(ctx, v):
    """The IR node of the current scope that computes ``v`` (None for inputs)."""
    scope = ctx.scope
    if any(i.name == v.name for i in scope.inputs):
        return None
    nodes = scope.nodes
    for attempt in range(2):
        seen, index = _INDEX.get(scope, (0, {})) if attempt == 0 else (0, {})
        for i in range(seen, len(nodes)):
            for o in nodes[i].outputs:
                index[o.name] = i
        _INDEX[scope] = (len(nodes), index)
        pos = index.get(v.name)
        # converters' outputs get renamed after the fact: a stale position is re-indexed
        if pos is not None and any(o.name == v.name for o in nodes[pos].outputs):
            return nodes[pos]
    return None


def _dim_arith(op: str, a, b):
    """Integer arithmetic on dims as ONNX computes it on shape tensors (None: not a dim)."""
    if not isinstance(a, (int, DimExpr)) or not isinstance(b, (int, DimExpr)):
        return None
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if isinstance(b, int) and b <= 0:
        return None  # only sizes divided by positive numbers are followed
    try:  # sizes are >= 0, so ONNX's truncating division is a floor division
        return a // b if isinstance(b, int) else exact_div(a, b)
    except DimError:
        return None


def dim_count(ctx, x, axes, like):
    """The number of elements of ``x`` over ``axes`` as a scalar of ``like``'s dtype, counted
    at run time when a dim is symbolic (a Python product of symbolic dims is not a number)."""
    static, parts = 1, []
    for a in axes:
        d = x.shape[a]
        if isinstance(d, int):
            static *= d
        else:
            parts.append(ctx.op("shape_of", x, start=a, end=a + 1, dtype="i64"))
    if not parts:
        return ctx.scalar(static, like)
    n = parts[0]
    for p in parts[1:]:
        n = ctx.op("mul", n, p)
    n = ctx.convert(ctx.reshape(n, ()), like if isinstance(like, str) else like.dtype)
    return n if static == 1 else ctx.op("mul", n, ctx.scalar(static, n))


def shape_dims(ctx, v, depth: int = 0):
    """The entries of a small integer tensor as dims (ints or symbolic dims), or None."""
    known = ctx.known(v)
    if known is not None:
        known = np.asarray(known)
        return [int(i) for i in known.reshape(-1)] if known.dtype.kind in "iu" else None
    if depth > 64 or not is_int(v.dtype) or not v.type.is_static or v.type.numel() > 64:
        return None
    n = _producer(ctx, v)
    if n is None:
        return None
    a = n.attrs
    if n.op == "shape_of":
        x = n.inputs[0]
        return list(x.shape[a.get("start", 0):x.type.rank if a.get("end") is None else a["end"]])
    if n.op == "constant":
        return [a["value"]] * v.type.numel()
    if n.op == "select":  # Where(Equal(shape, -1), ..., shape): a test decided by the dims
        cond = _truth(ctx, n.inputs[0], depth + 1)
        x, y = (shape_dims(ctx, i, depth + 1) for i in n.inputs[1:])
        if cond is None or x is None or y is None:
            return None
        k = max(len(cond), len(x), len(y))
        return [x[i % len(x)] if cond[i % len(cond)] else y[i % len(y)] for i in range(k)]
    ins = [shape_dims(ctx, i, depth + 1) for i in n.inputs]
    if any(i is None for i in ins):
        return None
    if n.op in ("convert", "reshape", "squeeze", "expand_dims"):
        return ins[0]
    if n.op == "concatenate":
        return [d for i in ins for d in i]
    if n.op == "slice" and v.type.rank == 1:
        if not all(isinstance(b[0], int) for b in (a["start"], a["limit"])):
            return None
        return ins[0][a["start"][0]:a["limit"][0]:(a.get("strides") or (1,))[0]]
    if n.op == "take" and n.inputs[0].type.rank == 1:
        if not all(-len(ins[0]) <= i < len(ins[0]) for i in ins[1]):
            return None  # out of range: the take's own converter says so
        return [ins[0][i] for i in ins[1]]
    if n.op == "reduce_prod":
        return [shape_numel(ins[0])]
    if n.op in _DIM_OPS and len(ins) == 2:
        x, y = ins
        if len(x) != len(y) and 1 not in (len(x), len(y)):
            return None
        k = max(len(x), len(y))
        out = [_dim_arith(n.op, x[i % len(x)], y[i % len(y)]) for i in range(k)]
        return None if any(d is None for d in out) else out
    return None


def _truth(ctx, v, depth: int):
    """The entries of a small bool tensor comparing dims (eq/ne), when the dims decide them."""
    known = ctx.known(v)
    if known is not None:
        return [bool(b) for b in np.asarray(known).reshape(-1)]
    n = _producer(ctx, v)
    if n is None or n.op not in ("eq", "ne") or depth > 64:
        return None
    x, y = (shape_dims(ctx, i, depth + 1) for i in n.inputs)
    if x is None or y is None or (len(x) != len(y) and 1 not in (len(x), len(y))):
        return None
    out = []
    for i in range(max(len(x), len(y))):
        eq = _dims_eq(x[i % len(x)], y[i % len(y)])
        if eq is None:
            return None
        out.append(eq if n.op == "eq" else not eq)
    return out


def _dims_eq(a, b):
    """Whether two dims are equal for all sizes: True, False, or None when undecided."""
    from ....ir.dims import dim_ge
    if a == b:
        return True
    if dim_ge(a, b + 1) or dim_ge(b, a + 1):
        return False
    return None


def target_dims(ctx, v, what: str):
    """A shape-like input's entries, symbolic ones allowed (else it must be known)."""
    dims = shape_dims(ctx, v)
    return tuple(dims) if dims is not None else known_ints(ctx, v, what)
