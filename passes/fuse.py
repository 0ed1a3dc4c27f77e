"""fuse: dense/conv + bias + activation become one named composite (``fused.dense_bias_relu``).

The same pass also forms ``fused.layer_norm`` / ``fused.rms_norm`` (fuse_norms.py) and
``fused.attention`` (fuse_attention.py); activations written out as arithmetic are recognised
by fuse_activations.py through ``Rewriter.activation``.
"""
from __future__ import annotations

from ..ir import Graph, Node, Value
from .context import PassContext
from .registry import register_pass
from .rewrite import Rewriter, apply_patterns, pattern

# Ops that only move or retype a weight or bias on its way: it stays a weight through them.
_BIAS_VIEWS = ("broadcast_in_dim", "reshape", "convert", "expand_dims", "transpose")


def _linear(rw: Rewriter, v: Value) -> tuple[str, Node, int] | None:
    """``(kind, node, channel axis of its output)`` when ``v`` is made by a dense or a conv.

    A dense multiplies by a weight (param or constant) with one free dim: that dim is the
    output channel, wherever the weight sits (``x @ W`` or ``W @ x``).
    """
    n = rw.producer(v)
    if n is None:
        return None
    if n.op == "dot_general":
        (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
        lhs, rhs = n.inputs
        lfree = [d for d in range(lhs.type.rank) if d not in (*lc, *lb)]
        rfree = [d for d in range(rhs.type.rank) if d not in (*rc, *rb)]
        if _is_weight(rw, rhs) and len(rfree) == 1:  # out = batch, lhs free, rhs free
            return "dense", n, n.output.type.rank - 1
        if _is_weight(rw, lhs) and len(lfree) == 1:
            return "dense", n, len(lb)
        return None
    if n.op == "conv":
        return "conv", n, n.attrs["dimension_numbers"][2].index("C")
    return None


def _is_weight(rw: Rewriter, v: Value) -> bool:
    """Whether ``v`` is a param or constant, possibly broadcast/reshaped/transposed on the way."""
    seen = 0
    while seen < 8:
        if rw.is_param(v):
            return True
        p = rw.producer(v)
        if p is None:
            return False
        if p.op == "constant":
            return True
        if p.op not in _BIAS_VIEWS or len(p.inputs) != 1:
            return False
        v, seen = p.inputs[0], seen + 1
    return False


def _bias_along_channel(bias: Value, out: Value, axis: int) -> bool:
    """Whether ``bias`` broadcasts onto ``out`` along ``axis`` only (numpy alignment)."""
    b, o = bias.type.shape, out.type.shape
    if len(b) > len(o) or bias.type.dtype != out.type.dtype:
        return False
    for k, size in enumerate(b):
        pos = len(o) - len(b) + k
        if size != 1 and (pos != axis or size != o[axis]):
            return False
    return True


def _match_bias(rw: Rewriter, add: Node):
    """``(kind, linear node, bias value)`` for ``add(linear(...), bias)``, remarking near misses."""
    if add.op != "add" or rw.num_uses(add.output) == 0:
        return None
    for lin_v, bias in (add.inputs, add.inputs[::-1]):
        found = _linear(rw, lin_v)
        if found is None:
            continue
        kind, lin, axis = found
        if lin_v.type != add.output.type:
            return None  # the add broadcasts the linear result itself: not a bias
        if not _is_weight(rw, bias):
            rw.remark("missed", f"did not fuse {kind}+bias: the bias %{bias.name} is not a "
                      "param or constant", add, reason="bias-not-constant")
            return None
        if not _bias_along_channel(bias, add.output, axis):
            rw.remark("missed", f"did not fuse {kind}+bias: the bias {bias.type} does not "
                      f"broadcast along the output channel (axis {axis} of {add.output.type})",
                      add, reason="bias-not-per-channel")
            return None
        if rw.num_uses(lin_v) != 1:
            rw.remark("missed", f"did not fuse {kind}+bias: %{lin_v.name} ({lin.op}) has "
                      f"{rw.num_uses(lin_v)} users", add, reason="several-users")
            return None
        return kind, lin, bias
    return None


def _fused(rw: Rewriter, nodes, kind: str, act: str | None) -> bool:
    name = f"fused.{kind}_bias" + (f"_{act}" if act else "")
    fused = rw.outline(nodes, name, {"activation": act or "none"})
    if fused is None:
        return False
    rw.remark("applied", f"formed {name}", fused, nodes=len(nodes))
    return True


@pattern("fuse-linear-bias-activation")
def fuse_linear_bias_activation(rw: Rewriter, node: Node) -> bool:
    """linear → add(bias) → activation, as one composite."""
    found = rw.activation(node)
    if found is None or rw.num_uses(node.outputs[0]) == 0 or _inner_of_clip(rw, node):
        return False
    act, x, act_nodes = found
    add = rw.producer(x)
    if add is None or add.op != "add":
        return False
    matched = _match_bias(rw, add)
    if matched is None:
        return False
    kind, lin, _ = matched
    # silu reads x twice (x * logistic(x)): only reads outside the activation count.
    inner = sum(rw.resolve(v).name == x.name for n in act_nodes for v in n.inputs)
    if rw.num_uses(x) != inner:
        rw.remark("missed", f"did not fuse {kind}+bias+{act}: %{x.name} (add) has "
                  f"{rw.num_uses(x) - inner} users besides the {act}", node, reason="several-users")
        return False
    return _fused(rw, [lin, add, *act_nodes], kind, act)


@pattern("fuse-linear-bias", ops="add")
def fuse_linear_bias(rw: Rewriter, node: Node) -> bool:
    """linear → add(bias), when no activation follows (else the pattern above takes it)."""
    if _feeds_activation(rw, node):
        return False
    matched = _match_bias(rw, node)
    if matched is None:
        return False
    kind, lin, _ = matched
    for u in rw.users.get(node.output.name, ()):
        found = rw.activation(u)
        if found is not None and rw.resolve(found[1]).name == node.output.name:
            others = rw.num_uses(node.output) - 1
            rw.remark("missed", f"did not fuse {kind}+bias+{found[0]}: %{node.output.name} (add) "
                      f"has {others} users besides the {found[0]}", node, reason="several-users")
    return _fused(rw, [lin, node], kind, None)


def _inner_of_clip(rw: Rewriter, node: Node) -> bool:
    """Whether ``node`` is the inner bound of a clip (its only reader bounds it the other way).

    The outer node is not in ``rw.producers`` yet, so the clip is recognised from here.
    """
    if not (node.op == "relu" or (node.op in ("min", "max") and rw._bounded(node) is not None)):
        return False
    outer = "min" if node.op in ("relu", "max") else "max"
    nxt = rw.users.get(node.output.name, ())
    return (len(nxt) == 1 and node.output.name not in rw.outputs
            and nxt[0].op == outer and rw._bounded(nxt[0]) is not None)


def _feeds_activation(rw: Rewriter, add: Node) -> bool:
    """Whether the add's only readers form an activation (x * logistic(x) reads it twice)."""
    out = add.output.name
    users = rw.users.get(out, ())
    if out in rw.outputs or not users:
        return False
    if len(users) == 1:
        u = users[0]
        found = rw.activation(u)
        if found is not None:
            return rw.resolve(found[1]).name == out
        return _inner_of_clip(rw, u)
    # Later nodes are not in ``rw.producers`` yet: recognise silu from the users themselves.
    if len(users) == 2 and {u.op for u in users} == {"logistic", "mul"}:
        sig, mul = sorted(users, key=lambda u: u.op)
        return {rw.resolve(v).name for v in mul.inputs} == {out, sig.output.name}
    return _feeds_written_out(rw, out)


def _feeds_written_out(rw: Rewriter, out: str) -> bool:
    """Whether ``out`` is the input of an activation written out further down (GELU)."""
    from .fuse_activations import _EW, _elementwise_body, written_out
    frontier, seen = list(rw.users.get(out, ())), set()
    for _ in range(8):
        nxt = []
        for u in frontier:
            if u.name in seen or not (u.op in _EW or _elementwise_body(u)):
                continue
            seen.add(u.name)
            found = written_out(rw, u, lookahead=True)
            if found is not None and rw.resolve(found[1]).name == out:
                return True
            nxt.extend(rw.users.get(u.outputs[0].name, ()))
        frontier = nxt
    return False


PATTERNS = [fuse_linear_bias_activation, fuse_linear_bias]


@register_pass("fuse")
def fuse(graph: Graph, ctx: PassContext | None = None) -> Graph:
    """Group dense/conv + bias (+ activation), norms and attention into named composites."""
    from . import fuse_attention, fuse_norms
    # Attention and norms first: their bodies hold adds and muls the linear patterns would
    # otherwise take one at a time.
    graph = apply_patterns(graph, fuse_attention.PATTERNS + fuse_norms.PATTERNS, ctx)
    return apply_patterns(graph, PATTERNS, ctx)
