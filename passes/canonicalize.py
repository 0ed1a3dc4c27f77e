"""Canonicalisation: a table of small local rewrites that remove no-ops and pick one form."""
from __future__ import annotations


from ..ir import Graph, Node, Value
from ..ir.ops._rules import broadcast_shapes
from ..ir.registry import OPS, did_you_mean
from .context import PassContext
from .registry import Option, PassOptionError, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns, pattern


def _fire(rw: Rewriter, node: Node, value, message: str) -> bool:
    rw.remark("applied", message, node)
    return rw.replace(node, value)


def _missed(rw: Rewriter, node: Node, message: str) -> None:
    rw.remark("missed", message, node)


def _attrs(node: Node) -> dict:
    return dict(node.attrs)


def _ref(rw: Rewriter, v: Value) -> str:
    return ("@" if rw.is_param(v) else "%") + v.name


# --- single-input ops that are no-ops when their output type equals their input type --------
# op -> extra condition on the attributes (the type check alone would let e.g. a transpose of a
# square matrix through).
def _all_zero(node: Node, *keys: str) -> bool:
    return all(all(v == 0 for v in (node.attrs.get(k) or ())) for k in keys)


IDENTITY_WHEN = {
    "convert": lambda n, x: n.attrs["dtype"] == x.dtype,
    "bitcast_convert": lambda n, x: n.attrs["dtype"] == x.dtype,
    "reshape": lambda n, x: True,
    "transpose": lambda n, x: tuple(n.attrs["permutation"]) == tuple(range(x.type.rank)),
    "broadcast_in_dim": lambda n, x: True,  # same shape forces identity broadcast_dimensions
    "slice": lambda n, x: _all_zero(n, "start") and all(s == 1 for s in n.attrs.get("strides") or ()),
    "dynamic_slice": lambda n, x: True,  # full-size slice: start indices clamp to 0
    "pad": lambda n, x: _all_zero(n, "low", "high", "interior"),
    "rev": lambda n, x: all(x.shape[a] == 1 for a in n.attrs["axes"]),
    "squeeze": lambda n, x: True,
    "expand_dims": lambda n, x: True,
    "concatenate": lambda n, x: len(n.inputs) == 1,
    # reducing nothing, or only size-1 axes with keepdims, returns the input
    **{op: (lambda n, x: True) for op in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                                          "reduce_and", "reduce_or", "reduce_xor")},
}


@pattern("drop-identity-op", ops=IDENTITY_WHEN)
def drop_identity_op(rw: Rewriter, node: Node):
    """convert to its own dtype, reshape to its own shape, identity transpose/slice/pad... -> x."""
    x = node.inputs[0]
    if len(node.outputs) == 1 and node.output.type == x.type and IDENTITY_WHEN[node.op](node, x):
        return _fire(rw, node, x, f"dropped no-op {node.op} (result equals {_ref(rw, x)})")
    return None


# --- binary ops with an identity element: x*1, 1*x, x+0, 0+x, x-0, x/1 -------------------
BINARY_IDENTITY = {"add": (0, "either"), "mul": (1, "either"), "sub": (0, "right"),
                   "div": (1, "right")}


@pattern("drop-binary-identity", ops=BINARY_IDENTITY)
def drop_binary_identity(rw: Rewriter, node: Node):
    """x*1, 1*x, x+0, 0+x, x-0, x/1 -> x unless the constant broadcasts x to a bigger shape."""
    # x + 0 -> x also maps x = -0.0 to itself where IEEE gives +0.0, as XLA's simplifier does.
    unit, sides = BINARY_IDENTITY[node.op]
    a, b = node.inputs
    for keep, const in ((a, b), (b, a)) if sides == "either" else ((a, b),):
        if rw.constant_value(const) != unit:
            continue
        if keep.type == node.output.type:
            return _fire(rw, node, keep, f"dropped {node.op} by {unit} (result equals {_ref(rw, keep)})")
        _missed(rw, node, f"did not drop {node.op} by {unit}: result {node.output.type} differs "
                          f"from operand {_ref(rw, keep)} {keep.type} (broadcasting)")
    return None


# --- chains of the same op -----------------------------------------------------------------
@pattern("merge-transposes", ops="transpose")
def merge_transposes(rw: Rewriter, node: Node):
    """transpose(transpose(x)) -> one transpose, or x when the permutations cancel."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op != "transpose":
        return None
    p1, p2 = inner.attrs["permutation"], node.attrs["permutation"]
    perm = tuple(p1[j] for j in p2)
    x = inner.inputs[0]
    if perm == tuple(range(len(perm))):
        return _fire(rw, node, x, f"transposes %{inner.name} and %{node.name} cancel")
    return _fire(rw, node, rw.op("transpose", x, loc=node.loc, permutation=perm),
                 f"merged transposes %{inner.name} and %{node.name} into one {perm}")


@pattern("merge-reshapes", ops="reshape")
def merge_reshapes(rw: Rewriter, node: Node):
    """reshape(reshape(x)) -> one reshape, or x when it lands on x's shape."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op != "reshape":
        return None
    x = inner.inputs[0]
    if x.type == node.output.type:
        return _fire(rw, node, x, f"reshapes %{inner.name} and %{node.name} cancel")
    return _fire(rw, node, rw.op("reshape", x, loc=node.loc, shape=node.attrs["shape"]),
                 f"merged reshapes %{inner.name} and %{node.name}")


# Element types as (exponent bits, mantissa bits); a float type holds another exactly when it
# has at least as many of both.
_FLOAT_BITS = {"f64": (11, 52), "f32": (8, 23), "bf16": (8, 7), "f16": (5, 10),
               "f8e4m3fn": (4, 3), "f8e4m3fnuz": (4, 3), "f8e5m2": (5, 2), "f8e5m2fnuz": (5, 2)}
_INT_BITS = {"i4": 4, "i8": 8, "i16": 16, "i32": 32, "i64": 64,
             "u4": 4, "u8": 8, "u16": 16, "u32": 32, "u64": 64}


def converts_exactly(src: str, dst: str) -> bool:
    """True when every value of element type ``src`` is exactly representable in ``dst``."""
    if src == dst:
        return True
    if src == "bool":
        return dst in _INT_BITS or dst in _FLOAT_BITS
    if src in _INT_BITS:
        magnitude = _INT_BITS[src] - (src[0] == "i")  # value bits without the sign
        if dst in _INT_BITS:
            signed = dst[0] == "i"
            return (src[0] == "u" or signed) and _INT_BITS[dst] - signed >= magnitude
        return dst in ("f16", "bf16", "f32", "f64") and _FLOAT_BITS[dst][1] + 1 >= magnitude
    if src in _FLOAT_BITS and dst in ("f16", "bf16", "f32", "f64"):
        (se, sm), (de, dm) = _FLOAT_BITS[src], _FLOAT_BITS[dst]
        return de >= se and dm >= sm
    return (src, dst) in {("c64", "c128"), ("f32", "c64"), ("f32", "c128"), ("f64", "c128")}


@pattern("merge-converts", ops="convert")
def merge_converts(rw: Rewriter, node: Node):
    """convert(convert(x)) -> one convert (or x) when the first convert is exact."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op != "convert":
        return None
    x = inner.inputs[0]
    mid, dst = inner.attrs["dtype"], node.attrs["dtype"]
    chain = f"{x.dtype}->{mid}->{dst}"
    if not converts_exactly(x.dtype, mid):
        _missed(rw, node, f"did not merge converts %{inner.name}, %{node.name} ({chain}): "
                          f"{mid} cannot hold every {x.dtype} value, so the chain rounds")
        return None
    # The first convert keeps the value, so converting the original gives the same result.
    if dst == x.dtype:
        return _fire(rw, node, x, f"converts {chain} round-trip exactly to {_ref(rw, x)}")
    return _fire(rw, node, rw.op("convert", x, loc=node.loc, dtype=dst),
                 f"merged exact converts {chain} into one")


# --- arithmetic forms ----------------------------------------------------------------------
def _constness(rw: Rewriter, v: Value) -> int:
    producer = rw.producer(v)
    return 2 if producer is not None and producer.op == "constant" else 1 if rw.is_param(v) else 0


@pattern("max-zero-to-relu", ops="max")
def max_zero_to_relu(rw: Rewriter, node: Node):
    """max(x, 0) and max(0, x) -> relu(x) when the 0 does not broadcast x."""
    a, b = node.inputs
    for x, c in ((a, b), (b, a)):
        value = rw.constant_value(c)
        if value is None or _constness(rw, x) or x.dtype == "bool":
            continue  # max of two constants is fold-constants' business
        if value != 0:
            if value not in (float("inf"), float("-inf")):  # max(x, -inf) is another idiom
                _missed(rw, node, f"max with constant {value} is not relu (needs 0)")
        elif x.type != node.output.type:
            _missed(rw, node, f"did not rewrite max to relu: result {node.output.type} differs "
                              f"from operand {_ref(rw, x)} {x.type} (broadcasting)")
        else:
            return _fire(rw, node, rw.op("relu", x, loc=node.loc), "max(x, 0) is relu")
        return None
    return None


BINARY_ELEMENTWISE = frozenset(name for name, od in OPS.items() if "binary" in od.traits)


@pattern("drop-broadcast-operand", ops=BINARY_ELEMENTWISE)
def drop_broadcast_operand(rw: Rewriter, node: Node):
    """op(x, broadcast_in_dim(b)) -> op(x, b) when numpy broadcasting of b does the same."""
    out = node.output
    for i in (0, 1):
        bcast, other = rw.producer(node.inputs[i]), node.inputs[1 - i]
        if bcast is None or bcast.op != "broadcast_in_dim":
            continue
        src = bcast.inputs[0]
        rank, dims = len(bcast.attrs["shape"]), tuple(bcast.attrs["broadcast_dimensions"])
        if dims != tuple(range(rank - src.type.rank, rank)):
            _missed(rw, node, f"did not drop broadcast %{bcast.name}: it maps operand dims to "
                              f"{dims}, not the trailing dims numpy broadcasting aligns")
            continue
        if other.type.shape != out.type.shape:
            _missed(rw, node, f"did not drop broadcast %{bcast.name}: the other operand "
                              f"{_ref(rw, other)} {other.type} lacks the result shape {out.type}")
            continue
        if broadcast_shapes(src.shape, other.shape) != tuple(out.shape):
            _missed(rw, node, f"did not drop broadcast %{bcast.name}: result shape differs "
                              f"from operand")
            continue
        ins = (src, other) if i == 0 else (other, src)
        return _fire(rw, node, rw.op(node.op, *ins, loc=node.loc, **_attrs(node)),
                     f"dropped broadcast %{bcast.name}: {node.op} broadcasts {_ref(rw, src)} itself")
    return None


def _negated(rw: Rewriter, v: Value) -> Value | None:
    n = rw.producer(v)
    return n.inputs[0] if n is not None and n.op == "neg" else None


@pattern("neg-neg", ops="neg")
def neg_neg(rw: Rewriter, node: Node):
    """neg(neg(x)) -> x."""
    x = _negated(rw, node.inputs[0])
    if x is not None and x.type == node.output.type:
        return _fire(rw, node, x, "neg(neg(x)) is x")
    return None


@pattern("fold-neg-operand", ops=("sub", "add"))
def fold_neg_operand(rw: Rewriter, node: Node):
    """x - (-y) -> x + y; x + (-y) and (-y) + x -> x - y."""
    a, b = node.inputs
    if node.op == "sub" and (y := _negated(rw, b)) is not None:
        return _fire(rw, node, rw.op("add", a, y, loc=node.loc), "x - (-y) is x + y")
    if node.op == "add":
        if (y := _negated(rw, b)) is not None:
            return _fire(rw, node, rw.op("sub", a, y, loc=node.loc), "x + (-y) is x - y")
        if (y := _negated(rw, a)) is not None:
            return _fire(rw, node, rw.op("sub", b, y, loc=node.loc), "(-y) + x is x - y")
    return None


# Ops f with f(f(x)) == f(x) (round only with the same method: its attrs must match).
IDEMPOTENT = frozenset({"relu", "relu6", "abs", "sign", "floor", "ceil", "round"})


@pattern("idempotent", ops=IDEMPOTENT)
def idempotent(rw: Rewriter, node: Node):
    """f(f(x)) -> f(x) for relu, abs, floor, ... (same attributes)."""
    inner = rw.producer(node.inputs[0])
    if inner is not None and inner.op == node.op and inner.attrs == node.attrs:
        return _fire(rw, node, inner.output, f"{node.op}({node.op}(x)) is {node.op}(x)")
    return None


@pattern("square", ops=("mul", "integer_pow"))
def square(rw: Rewriter, node: Node):
    """mul(x, x) and integer_pow(x, 2) -> square(x); integer_pow(x, 1) -> x."""
    x = node.inputs[0]
    if node.op == "mul" and node.inputs[1].name == x.name and x.type == node.output.type:
        return _fire(rw, node, rw.op("square", x, loc=node.loc), "mul(x, x) is square(x)")
    if node.op == "integer_pow" and node.attrs["y"] == 1:
        return _fire(rw, node, x, "integer_pow(x, 1) is x")
    if node.op == "integer_pow" and node.attrs["y"] == 2:
        return _fire(rw, node, rw.op("square", x, loc=node.loc), "integer_pow(x, 2) is square(x)")
    return None


COMMUTATIVE = frozenset(name for name, od in OPS.items() if "commutative" in od.traits)


@pattern("constant-operand-right", ops=COMMUTATIVE)
def constant_operand_right(rw: Rewriter, node: Node):
    """Commutative ops take constants, then params, as their right operand."""
    a, b = node.inputs
    if _constness(rw, a) <= _constness(rw, b):
        return None
    return _fire(rw, node, rw.op(node.op, b, a, loc=node.loc, **_attrs(node)),
                 f"moved the constant operand of {node.op} to the right")


PATTERNS: tuple[Pattern, ...] = (
    drop_identity_op, drop_binary_identity, merge_transposes, merge_reshapes, merge_converts,
    max_zero_to_relu, drop_broadcast_operand, neg_neg, fold_neg_operand, idempotent, square,
    constant_operand_right,
)


def _select(names: tuple[str, ...]) -> list[Pattern]:
    known = [p.name for p in PATTERNS]
    for n in names:
        if n not in known:
            raise PassOptionError(f"pass 'canonicalize' option 'disable': no pattern {n!r}"
                                  f"{did_you_mean(n, known)}; patterns: {', '.join(known)}")
    return [p for p in PATTERNS if p.name not in names]


@register_pass("canonicalize", options=[
    Option("disable", list, (), "pattern names to leave out, e.g. [square,idempotent]",
           check=lambda v: _select(v) and None)])
def canonicalize(graph: Graph, ctx: PassContext, disable: tuple[str, ...] = ()) -> Graph:
    """Simplify local patterns: drop no-ops, merge op chains, pick one form for each idiom."""
    return apply_patterns(graph, _select(disable), ctx, regions=True)
