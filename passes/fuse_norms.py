"""Layer norm and RMS norm written out as primitives become ``fused.layer_norm`` / ``fused.rms_norm``.

Matched by what they compute, not by one spelling: the output is a product of factors
(``mul``/``div`` trees, converts looked through) that holds an inverse standard deviation
``rsqrt(var + eps)`` (or ``1/sqrt``, ``x / sqrt``), the centered input ``x - mean(x)`` (layer
norm) or ``x`` itself (RMS norm), and at most one per-feature weight ``gamma``; a per-feature
``beta`` may be added last. ``var`` is ``mean((x - mean)^2)``, ``mean(x^2) - mean(x)^2`` (Flax's
fast variance, optionally clamped at 0) or ``mean(x^2)`` (RMS). ``mean`` is ``reduce_sum / N``
as JAX, ONNX ReduceMean and LayerNormalization import it.
"""
from __future__ import annotations

import math

from ..ir import Node, Value
from .fuse_outline import outline_operands, scalar
from .rewrite import Rewriter, pattern

_VIEWS = ("broadcast_in_dim", "reshape", "expand_dims")
_FLOATS = ("f16", "bf16", "f32", "f64")


class _Match:
    """What a norm match found: its nodes, input, axes, epsilon and weights."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.x: Value | None = None
        self.axes: tuple[int, ...] = ()
        self.eps = 0.0
        self.kind = ""
        self.gamma: Value | None = None
        self.beta: Value | None = None


def _p(rw: Rewriter, v: Value) -> Node | None:
    return rw.producer(v)


def _strip_views(rw: Rewriter, v: Value, nodes: list[Node]) -> Value:
    """``v`` with producers that only insert size-1 dims (single use) looked through."""
    while True:
        p = _p(rw, v)
        if (p is None or p.op not in _VIEWS or rw.num_uses(v) != 1
                or math.prod(_static(p.inputs[0].type.shape)) != math.prod(_static(v.type.shape))):
            return v
        nodes.append(p)
        v = p.inputs[0]


def _strip_convert(rw: Rewriter, v: Value, nodes: list[Node]) -> Value:
    """``v`` with a single-use float-to-float convert looked through."""
    p = _p(rw, v)
    if (p is not None and p.op == "convert" and rw.num_uses(v) == 1
            and p.inputs[0].type.dtype in _FLOATS and v.type.dtype in _FLOATS):
        nodes.append(p)
        return p.inputs[0]
    return v


def _static(shape) -> tuple:
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def _mean(rw: Rewriter, v: Value, nodes: list[Node]) -> tuple[Value, tuple[int, ...]] | None:
    """``(x, axes)`` when ``v`` is ``mean(x, axes)`` shaped like x with 1s at ``axes``."""
    found: list[Node] = []
    u = _strip_views(rw, v, found)
    u = _strip_convert(rw, u, found)  # jnp.mean of 16-bit floats sums in f32
    u = _strip_views(rw, u, found)
    p = _p(rw, u)
    if p is None or p.op not in ("div", "mul") or (u is not v and rw.num_uses(u) != 1):
        return None
    n = scalar(rw, p.inputs[1])
    if n is None or n == 0:
        return None
    count = n if p.op == "div" else 1.0 / n
    found.append(p)
    s = _strip_views(rw, p.inputs[0], found)
    r = _p(rw, s)
    if r is None or r.op != "reduce_sum" or (s is not p.inputs[0] and rw.num_uses(s) != 1):
        return None
    if rw.num_uses(p.inputs[0]) != 1 or rw.num_uses(s) != 1:
        return None
    x, axes = _strip_convert(rw, r.inputs[0], found), tuple(sorted(r.attrs["axes"]))
    dims = [x.type.shape[a] for a in axes]
    if not axes or not all(isinstance(d, int) for d in dims):
        return None
    if not math.isclose(math.prod(dims), count, rel_tol=1e-6):
        return None
    keep = tuple(1 if i in axes else d for i, d in enumerate(x.type.shape))
    if tuple(v.type.shape) != keep:
        return None
    found.append(r)
    nodes.extend(found)
    return x, axes


def _same(rw: Rewriter, a: Value, b: Value) -> bool:
    return rw.resolve(a).name == rw.resolve(b).name


def _centered(rw: Rewriter, c: Value, nodes: list[Node]) -> tuple[Value, tuple[int, ...]] | None:
    """``(x, axes)`` when ``c`` is ``x - mean(x, axes)``."""
    p = _p(rw, c)
    if p is None or p.op != "sub":
        return None
    got: list[Node] = []
    m = _mean(rw, p.inputs[1], got)
    if m is None or not _same(rw, m[0], p.inputs[0]):
        return None
    nodes.extend([p, *got])
    return m


def _squared(rw: Rewriter, t: Value, nodes: list[Node]) -> Value | None:
    """``c`` when ``t`` is ``square(c)``, ``c * c`` or ``pow(c, 2)``."""
    p = _p(rw, t)
    if p is None:
        return None
    if p.op == "square" or (p.op == "integer_pow" and p.attrs.get("y") == 2):
        nodes.append(p)
        return p.inputs[0]
    if p.op == "mul" and _same(rw, p.inputs[0], p.inputs[1]):
        nodes.append(p)
        return p.inputs[0]
    if p.op == "pow" and scalar(rw, p.inputs[1]) == 2.0:
        nodes.append(p)
        return p.inputs[0]
    return None


def _factors(rw: Rewriter, v: Value, nodes: list[Node], out: list, inv: bool = False,
             top: bool = True) -> None:
    """Flatten a product (mul/div/convert of single-use values) into ``(leaf, inverted)``."""
    p = _p(rw, v)
    if p is not None and (top or rw.num_uses(v) == 1) and v.type.dtype in _FLOATS:
        if p.op in ("mul", "div"):
            nodes.append(p)
            _factors(rw, p.inputs[0], nodes, out, inv, False)
            _factors(rw, p.inputs[1], nodes, out, inv ^ (p.op == "div"), False)
            return
        if p.op == "convert" and p.inputs[0].type.dtype in _FLOATS:
            nodes.append(p)
            _factors(rw, p.inputs[0], nodes, out, inv, False)
            return
    out.append((v, inv))


def _inverse_std(rw: Rewriter, v: Value, inv: bool, nodes: list[Node]) -> Value | None:
    """``var + eps`` (the add's value) when the factor is ``rsqrt``/``1/sqrt`` of it."""
    p = _p(rw, v)
    if p is None or rw.num_uses(v) != 1:
        return None
    if not inv and p.op == "rsqrt":
        nodes.append(p)
        return p.inputs[0]
    if inv and p.op == "sqrt":
        nodes.append(p)
        return p.inputs[0]
    if not inv and p.op == "reciprocal":
        q = _p(rw, p.inputs[0])
        if q is not None and q.op == "sqrt" and rw.num_uses(p.inputs[0]) == 1:
            nodes.extend([p, q])
            return q.inputs[0]
    return None


def _variance(rw: Rewriter, var: Value, m: _Match) -> Value | None:
    """Fill ``m.x``/``m.axes``/``m.kind`` from ``var``; returns the centered value (or x for RMS)."""
    got: list[Node] = []
    v = var
    p = _p(rw, v)
    if p is not None and (p.op == "relu" or (p.op == "max" and scalar(rw, p.inputs[1]) == 0.0)) \
            and rw.num_uses(v) == 1:
        got.append(p)  # Flax clamps the fast variance at 0
        v = p.inputs[0]
        p = _p(rw, v)
    if p is not None and p.op == "sub" and rw.num_uses(v) == 1:  # E[x^2] - E[x]^2
        a, b = [], []
        m2 = _mean(rw, p.inputs[0], a)
        sq = _squared(rw, p.inputs[1], b) if rw.num_uses(p.inputs[1]) == 1 else None
        mu = _mean(rw, sq, []) if sq is not None else None
        if m2 is not None and mu is not None:
            x2 = _squared(rw, m2[0], a)
            if x2 is not None and _same(rw, x2, mu[0]) and m2[1] == mu[1] and rw.num_uses(m2[0]) == 1:
                m.nodes.extend([*got, p, *a, *b])
                m.x, m.axes, m.kind = x2, mu[1], "layer_norm"
                return None  # the centered factor is found among the leaves
    mean2 = _mean(rw, v, got)
    if mean2 is None:
        return None
    c = _squared(rw, mean2[0], got)
    if c is None or rw.num_uses(mean2[0]) != 1:
        return None
    m.nodes.extend(got)
    centered: list[Node] = []
    xm = _centered(rw, c, centered)
    if xm is not None and xm[1] == mean2[1]:
        m.nodes.extend(centered)
        m.x, m.axes, m.kind = xm[0], xm[1], "layer_norm"
        return c
    m.x, m.axes, m.kind = c, mean2[1], "rms_norm"
    return c


def _per_feature(w: Value, out: Value, axes: tuple[int, ...]) -> bool:
    """Whether ``w`` broadcasts onto ``out`` varying only along ``axes`` (numpy alignment)."""
    ws, os_ = w.type.shape, out.type.shape
    if len(ws) > len(os_):
        return False
    for k, d in enumerate(ws):
        pos = len(os_) - len(ws) + k
        if d != 1 and (pos not in axes or d != os_[pos]):
            return False
    return True


def _is_weight(rw: Rewriter, v: Value) -> bool:
    from .fuse import _is_weight as weight
    return weight(rw, v)


def match_norm(rw: Rewriter, root: Node, product: Value, beta: Value | None) -> _Match | None:
    """The norm computed by ``product`` (+ ``beta``), remarking near misses; None if none."""
    m = _Match()
    leaves: list = []
    if product.name == root.outputs[0].name:  # the root is not in ``rw.producers`` yet
        m.nodes.append(root)
        if root.op == "convert":
            _factors(rw, root.inputs[0], m.nodes, leaves, False, False)
        else:
            _factors(rw, root.inputs[0], m.nodes, leaves, False, False)
            _factors(rw, root.inputs[1], m.nodes, leaves, root.op == "div", False)
    else:
        _factors(rw, product, m.nodes, leaves)
    for i, (v, inv) in enumerate(leaves):
        if not inv and _standardize(rw, v, m):  # jax.nn.standardize: centered * inv_std
            return _weights(rw, root, m, [lv for k, lv in enumerate(leaves) if k != i], None,
                            beta, True)
    std = None
    for i, (v, inv) in enumerate(leaves):
        nodes: list[Node] = []
        e = _inverse_std(rw, v, inv, nodes)
        add = _p(rw, e) if e is not None else None
        if add is not None and add.op == "add" and rw.num_uses(e) == 1:
            std = i, nodes + [add], add
            break
    if std is None:
        return None
    i, nodes, add = std
    m.nodes.extend(nodes)
    eps = scalar(rw, add.inputs[1])
    var = add.inputs[0]
    if eps is None:
        eps, var = scalar(rw, add.inputs[0]), add.inputs[1]
    what = "layer/RMS norm"
    if eps is None:
        rw.remark("missed", f"did not fuse {what}: the epsilon added to the variance "
                  f"(%{add.name}) is not a constant", root, reason="non-constant-operand")
        return None
    m.eps = eps
    centered = _variance(rw, var, m)
    if m.x is None:
        return None
    return _weights(rw, root, m, [lv for k, lv in enumerate(leaves) if k != i], centered, beta,
                    False)


def _standardize(rw: Rewriter, v: Value, m: _Match) -> bool:
    """Whether ``v`` is ``jax.nn.standardize(x, axis, epsilon=constant)`` (a composite)."""
    p = _p(rw, v)
    if (p is None or p.op != "composite" or p.attrs.get("name") != "jax.nn.standardize"
            or len(p.inputs) not in (1, 2) or not p.regions):
        return False
    eps = _body_epsilon(rw, p)
    first = p.regions[0].nodes[0] if p.regions[0].nodes else None
    if eps is None or first is None or first.op != "reduce_sum" or v.type != p.inputs[0].type:
        return False
    m.nodes.append(p)
    m.x, m.axes, m.eps, m.kind = p.inputs[0], tuple(sorted(first.attrs["axes"])), eps, "layer_norm"
    return True


def _body_epsilon(rw: Rewriter, p: Node) -> float | None:
    """The constant added under the rsqrt in a standardize body (a literal or its 2nd input)."""
    body = p.regions[0]
    made = {o.name: n for n in body.nodes for o in n.outputs}
    for n in body.nodes:
        add = made.get(n.inputs[0].name) if n.op == "rsqrt" else None
        if add is None or add.op != "add":
            continue
        for v in add.inputs:
            if len(p.inputs) == 2 and v.name == body.inputs[1].name:
                return scalar(rw, p.inputs[1])
            c = made.get(v.name)
            if c is not None and c.op == "constant" and not c.attrs.get("shape"):
                return float(c.attrs["value"])
    return None


def _weights(rw: Rewriter, root: Node, m: _Match, rest: list, centered: Value | None,
             beta: Value | None, found_x: bool) -> _Match | None:
    """``m`` completed with the remaining factors (x or x - mean, gamma) and ``beta``."""
    what = m.kind.replace("_", " ")
    for v, inv in rest:
        if not inv and not found_x:
            if m.kind == "rms_norm" and _same(rw, v, m.x):
                found_x = True
                continue
            if m.kind == "layer_norm":
                if centered is not None and _same(rw, v, centered):
                    found_x = True
                    continue
                extra: list[Node] = []
                xm = _centered(rw, v, extra)
                if xm is not None and _same(rw, xm[0], m.x) and xm[1] == m.axes:
                    m.nodes.extend(extra)
                    found_x = True
                    continue
        if scalar(rw, v) == 1.0:
            continue
        if not inv and m.gamma is None and _is_weight(rw, v) and _per_feature(v, root.outputs[0], m.axes):
            m.gamma = v
            continue
        why = ("is not a param or constant" if not _is_weight(rw, v) else
               "does not broadcast along the normalized axes" if not inv else "divides the result")
        rw.remark("missed", f"did not fuse {what}: the factor %{v.name} {why}", root,
                  reason="non-constant-operand" if "param" in why else "shape-not-supported")
        return None
    if not found_x:
        return None
    if beta is not None:
        if not _per_feature(beta, root.outputs[0], m.axes):
            rw.remark("missed", f"did not fuse the offset %{beta.name} {beta.type} into the "
                      f"{what}: it does not broadcast along the normalized axes", root,
                      reason="shape-not-supported")
            return None
        m.beta = beta
    if tuple(m.x.type.shape) != tuple(root.outputs[0].type.shape):
        rw.remark("missed", f"did not fuse {what}: the result {root.outputs[0].type} is "
                  f"broadcast beyond the input {m.x.type}", root, reason="shape-not-supported")
        return None
    m.nodes.append(root)
    return m


def _weight_operand(rw: Rewriter, out: Value, u: Node) -> Value | None:
    """The param or constant that ``u`` (a mul or add) applies to ``out``, if any."""
    if u.op not in ("mul", "add") or len(u.inputs) != 2:
        return None
    other = u.inputs[1] if _same(rw, u.inputs[0], out) else u.inputs[0]
    # a later node's operand is not in ``rw.producers`` yet: look a constant up ahead
    ahead = rw.graph.producers.get(other.name)
    if rw.is_param(other) or (ahead is not None and ahead.op == "constant") or _is_weight(rw, other):
        return other
    return None


def _continues(rw: Rewriter, out: Value, u: Node, m: _Match) -> bool:
    """Whether ``u`` extends the match ``m`` of ``out``: a convert, or the first per-feature
    weight (mul) or offset (add)."""
    if u.op == "convert":
        return True
    if (u.op == "mul" and m.gamma is None) or (u.op == "add" and m.beta is None):
        other = _weight_operand(rw, out, u)
        return other is not None and _per_feature(other, u.outputs[0], m.axes)
    return False


def _operands(m: _Match) -> tuple[list[Value], dict]:
    ops = [m.x] + [w for w in (m.gamma, m.beta) if w is not None]
    attrs = {"axes": m.axes, "epsilon": m.eps, "scale": m.gamma is not None,
             "offset": m.beta is not None}
    return ops, attrs


@pattern("fuse-norm", ops=("add", "mul", "div", "convert", "composite"))
def fuse_norm(rw: Rewriter, node: Node) -> bool:
    """Layer norm / RMS norm written out (JAX, Flax, ONNX export and op) -> one composite."""
    out = node.outputs[0] if len(node.outputs) == 1 else None
    if out is None or out.type.dtype not in _FLOATS or rw.num_uses(out) == 0:
        return False
    m = None
    if node.op == "add":
        for product, beta in (node.inputs, node.inputs[::-1]):
            p = _p(rw, product)
            if (p is not None and p.op in ("mul", "div", "convert") and rw.num_uses(product) == 1
                    and _is_weight(rw, beta)):
                m = match_norm(rw, node, product, beta)
                if m is not None:
                    break
    elif node.op == "composite":  # jax.nn.standardize with no weight after it
        m = _Match()
        if node.attrs.get("name") != "jax.nn.standardize":
            return False
        rw.producers[out.name] = node  # ``_standardize`` looks the root up as a producer
        try:
            found = _standardize(rw, out, m)
        finally:
            del rw.producers[out.name]
        if not found:
            return False
    else:
        m = match_norm(rw, node, out, None)
    if m is None:
        return False
    users = rw.users.get(out.name, ())
    extensions = [u for u in users if _continues(rw, out, u, m)]
    if extensions and rw.num_uses(out) == 1:
        return False  # the weight, offset or convert that follows is the root
    what = m.kind.replace("_", " ")
    if extensions:
        rw.remark("missed", f"did not fuse the {what} with the weight that follows: "
                  f"%{out.name} has {rw.num_uses(out)} users", node, reason="several-users")
    for u in users:
        other = _weight_operand(rw, out, u)
        if other is not None and u not in extensions:
            rw.remark("missed", f"did not fuse the {'offset' if u.op == 'add' else 'weight'} "
                      f"%{other.name} {other.type} into the {what}: it does not broadcast along "
                      "the normalized axes", node, reason="shape-not-supported")
    ops, attrs = _operands(m)
    return outline_operands(rw, m.nodes, f"fused.{m.kind}", attrs, ops) is not None


PATTERNS = [fuse_norm]
