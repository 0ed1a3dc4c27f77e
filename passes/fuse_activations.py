"""Activations written out as element-wise arithmetic (GELU as torch.onnx exports it, ...).

A candidate is the element-wise cone above a node whose only non-constant leaf ``x`` is read
at least twice (``0.5 * x * (1 + erf(x / sqrt(2)))``); it is classified by evaluating the
cone in float64 on a grid and comparing with each known activation, so every spelling
(constant order, ``div`` or ``mul`` by the reciprocal, ``pow(x, 3)`` or ``x*x*x``) matches.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Node, Value
from .rewrite import Rewriter

_EW = frozenset({"add", "sub", "mul", "div", "pow", "max", "min", "erf", "tanh", "exp",
                 "logistic", "neg", "relu", "sqrt", "rsqrt", "reciprocal", "square",
                 "integer_pow", "clamp", "convert"})
_MAX_NODES = 14
_GRID = np.concatenate([np.linspace(-8.0, 8.0, 97), [-0.3, -0.01, 0.0, 0.01, 0.3, 2.5, 5.5]])
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_erf = np.vectorize(math.erf)


def _relu6(t):
    return np.clip(t, 0.0, 6.0)


_REFERENCES = {
    "gelu": lambda t: 0.5 * t * (1.0 + _erf(t / math.sqrt(2.0))),
    "gelu_tanh": lambda t: 0.5 * t * (1.0 + np.tanh(_SQRT_2_PI * (t + 0.044715 * t ** 3))),
    "silu": lambda t: t / (1.0 + np.exp(-t)),
    "hard_swish": lambda t: t * _relu6(t + 3.0) / 6.0,
}
# the tanh form is a GELU too: fused names say gelu for both, as jax.nn.gelu does
_KIND = {"gelu_tanh": "gelu"}


def _scalar(rw: Rewriter, v: Value):
    c = rw.constant_value(v)
    if c is None:
        ahead = rw.graph.producers.get(v.name)
        if ahead is not None and ahead.op == "constant":
            c = ahead.attrs.get("value")
    try:
        return None if c is None or isinstance(c, bool) else float(c)
    except (TypeError, ValueError):
        return None


def _producer(rw: Rewriter, v: Value, lookahead: bool) -> Node | None:
    p = rw.producer(v)
    if p is None and lookahead:
        p = rw.graph.producers.get(v.name)
    return p


def _cone(rw: Rewriter, root: Node, x: Value, lookahead: bool) -> list[Node] | None:
    """The nodes computing ``root`` from ``x`` and scalar constants only (topological)."""
    order: list[Node] = []
    seen: set[str] = set()
    shape = root.outputs[0].type.shape

    def visit(n: Node) -> bool:
        if n.outputs[0].name in seen:
            return True
        for v in n.inputs:
            if rw.resolve(v).name == rw.resolve(x).name or _scalar(rw, v) is not None:
                continue
            p = _producer(rw, v, lookahead)
            if (p is None or not (p.op in _EW or _elementwise_body(p)) or len(p.outputs) != 1
                    or v.type.shape != shape
                    or len(order) >= _MAX_NODES or not visit(p)):
                return False
        seen.add(n.outputs[0].name)
        order.append(n)
        return True

    return order if visit(root) else None


def _elementwise_body(n: Node) -> bool:
    """A one-output composite (``jnp.clip``) whose body is element-wise arithmetic."""
    return (n.op == "composite" and len(n.outputs) == 1 and len(n.regions) == 1
            and all(m.op in _EW or (m.op == "constant" and not m.attrs.get("shape"))
                    for m in n.regions[0].nodes))


def _evaluate(rw: Rewriter, nodes: list[Node], x: Value, t: np.ndarray) -> np.ndarray | None:
    env = {rw.resolve(x).name: t}

    def val(v):
        name = rw.resolve(v).name
        return env[name] if name in env else _scalar(rw, v)

    return _run(nodes, env, val, t)


def _run(nodes, env, val, t):
    with np.errstate(all="ignore"):
        for n in nodes:
            a = [val(v) for v in n.inputs]
            op = n.op
            if op == "constant":
                r = float(n.attrs["value"])
            elif op == "composite":
                body = n.regions[0]
                inner = {b.name: u for b, u in zip(body.inputs, a)}
                _run(body.nodes, inner, lambda v: inner.get(v.name), t)
                r = inner[body.outputs[0].name]
            elif op in ("add", "sub", "mul", "div", "pow", "max", "min"):
                fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                      "pow": np.power, "max": np.maximum, "min": np.minimum}[op]
                r = fn(a[0], a[1])
            elif op == "clamp":
                r = np.clip(a[1], a[0], a[2])
            elif op == "integer_pow":
                r = np.power(a[0], n.attrs.get("y", 1))
            else:
                r = {"erf": _erf, "tanh": np.tanh, "exp": np.exp, "neg": np.negative,
                     "logistic": lambda u: 1.0 / (1.0 + np.exp(-u)), "relu": lambda u: np.maximum(u, 0.0),
                     "sqrt": np.sqrt, "rsqrt": lambda u: 1.0 / np.sqrt(u),
                     "reciprocal": lambda u: 1.0 / u, "square": np.square,
                     "convert": lambda u: u}[op](a[0])
            env[n.outputs[0].name] = np.broadcast_to(np.asarray(r, np.float64), t.shape)
    return env.get(nodes[-1].outputs[0].name) if nodes else None


def _candidates(rw: Rewriter, root: Node, lookahead: bool) -> list[Value]:
    """Values the element-wise cone above ``root`` reads, nearest first."""
    out: list[Value] = []
    frontier, seen = [root], set()
    for _ in range(8):
        nxt = []
        for n in frontier:
            for v in n.inputs:
                v = rw.resolve(v)
                if v.name in seen or _scalar(rw, v) is not None:
                    continue
                seen.add(v.name)
                if v.type == root.outputs[0].type:
                    out.append(v)
                p = _producer(rw, v, lookahead)
                if p is not None and (p.op in _EW or _elementwise_body(p)) and len(p.outputs) == 1:
                    nxt.append(p)
        frontier = nxt
    return out


def written_out(rw: Rewriter, node: Node, lookahead: bool = False):
    """``(kind, x, nodes)`` when ``node`` ends an activation written out, else None."""
    if (node.op not in ("mul", "div") or len(node.outputs) != 1
            or node.outputs[0].type.dtype not in ("f16", "bf16", "f32", "f64")):
        return None
    best = None
    for x in _candidates(rw, node, lookahead):
        nodes = _cone(rw, node, x, lookahead)
        if nodes is None or len(nodes) < 2:
            continue
        reads = sum(rw.resolve(v).name == x.name for n in nodes for v in n.inputs)
        if reads < 2:
            continue
        got = _evaluate(rw, nodes, x, _GRID)
        if got is None:
            continue
        for kind, ref in _REFERENCES.items():
            want = ref(_GRID)
            if np.all(np.abs(got - want) <= 2e-5 * (1.0 + np.abs(want))):
                if best is None or len(nodes) > len(best[2]):
                    best = (_KIND.get(kind, kind), x, tuple(nodes))
                break
    return best
