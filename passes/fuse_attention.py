"""``softmax(Q·Kᵀ·s + mask)·V`` becomes one ``fused.attention`` composite.

Matched from the second product back: ``dot_general(P, V)`` where ``P`` is a softmax over
the key axis (the ``softmax`` op ONNX imports, JAX's ``jax.nn.softmax`` composite, or the
safe softmax the ONNX ``Attention`` op unrolls to, with its fully masked rows zeroed),
optionally behind torch's ``where(isnan(P), 0, P)``; its logits are ``dot_general(Q, K)``
scaled by constants (on Q, on K or on the scores), then an additive bias or a boolean mask
(``where(mask, scores, fill)``). Heads are batch dims of both products, in any layout: the
composite records the dims of Q, K and V as (batch..., sequence, feature).
"""
from __future__ import annotations

import math

from ..ir import Node, Value
from .fuse_outline import outline_operands, scalar
from .rewrite import Rewriter, pattern

_NAME = "fused.attention"


def _p(rw: Rewriter, v: Value) -> Node | None:
    return rw.producer(v)


def _same(rw: Rewriter, a: Value, b: Value) -> bool:
    return rw.resolve(a).name == rw.resolve(b).name


def _is_const(rw: Rewriter, v: Value, value: float) -> bool:
    c = scalar(rw, v)
    return c is not None and (c == value or (math.isinf(value) and c == value))


def _unrolled_softmax(rw: Rewriter, probs: Value, nodes: list[Node]) -> Value | None:
    """The logits of the safe softmax the ONNX Attention op imports as (max, where(max == -inf,
    0, max), exp, sum, where(sum == 0, 1, sum), div) over the last axis."""
    last = (probs.type.rank - 1,)

    def prod(v, op):
        p = _p(rw, v)
        return p if p is not None and p.op == op else None

    div = prod(probs, "div")
    sel = div and prod(div.inputs[1], "select")
    eq = sel and prod(sel.inputs[0], "eq")
    red = eq and prod(sel.inputs[2], "reduce_sum")
    if not (red and _same(rw, eq.inputs[0], sel.inputs[2]) and _is_const(rw, eq.inputs[1], 0.0)
            and _is_const(rw, sel.inputs[1], 1.0) and _same(rw, red.inputs[0], div.inputs[0])
            and tuple(red.attrs["axes"]) == last and red.attrs.get("keepdims")):
        return None
    ex = prod(div.inputs[0], "exp")
    sub = ex and prod(ex.inputs[0], "sub")
    sel2 = sub and prod(sub.inputs[1], "select")
    eq2 = sel2 and prod(sel2.inputs[0], "eq")
    mx = eq2 and prod(sel2.inputs[2], "reduce_max")
    if not (mx and _same(rw, eq2.inputs[0], sel2.inputs[2]) and _is_const(rw, eq2.inputs[1], -math.inf)
            and _is_const(rw, sel2.inputs[1], 0.0) and _same(rw, mx.inputs[0], sub.inputs[0])
            and tuple(mx.attrs["axes"]) == last and mx.attrs.get("keepdims")):
        return None
    nodes.extend([div, sel, eq, red, ex, sub, sel2, eq2, mx])
    return sub.inputs[0]


def _softmax_input(rw: Rewriter, probs: Value, nodes: list[Node]) -> Value | None:
    """The logits when ``probs`` is a softmax over its last axis."""
    p = _p(rw, probs)
    if p is None:
        return None
    if p.op == "div":
        return _unrolled_softmax(rw, probs, nodes)
    last = probs.type.rank - 1
    if p.op == "softmax" and p.attrs.get("axis", -1) in (-1, last):
        nodes.append(p)
        return p.inputs[0]
    if (p.op == "composite" and p.attrs.get("name") == "jax.nn.softmax" and len(p.inputs) == 1
            and p.regions and p.regions[0].nodes):
        first = p.regions[0].nodes[0]
        if first.op == "reduce_max" and tuple(first.attrs.get("axes", ())) == (last,):
            nodes.append(p)
            return p.inputs[0]
    return None


def _scaled(rw: Rewriter, v: Value, nodes: list[Node]) -> tuple[Value, float]:
    """``(x, s)`` with ``v = x * s`` through single-use mul/div by scalar constants."""
    scale = 1.0
    while True:
        p = _p(rw, v)
        if p is None or p.op not in ("mul", "div") or rw.num_uses(v) != 1:
            return v, scale
        c, x = scalar(rw, p.inputs[1]), p.inputs[0]
        if c is None and p.op == "mul":
            c, x = scalar(rw, p.inputs[0]), p.inputs[1]
        if c is None or c == 0 or x.type != v.type:
            return v, scale
        scale = scale * c if p.op == "mul" else scale / c
        nodes.append(p)
        v = x


def _operand(rw: Rewriter, v: Value, dims: tuple, nodes: list[Node], scales: bool = True):
    """``(x, dims of x, scale)``: constant scales and transposes before the product folded in."""
    scale = 1.0
    while True:
        if scales:
            v, s = _scaled(rw, v, nodes)
            scale *= s
        p = _p(rw, v)
        if p is None or p.op != "transpose" or rw.num_uses(v) != 1:
            return v, tuple(dims), scale
        perm = p.attrs["permutation"]
        dims = tuple(perm[d] for d in dims)  # output dim i is input dim perm[i]
        nodes.append(p)
        v = p.inputs[0]


def _free(n: int, *used) -> list[int]:
    taken = {d for u in used for d in u}
    return [d for d in range(n) if d not in taken]


class _Attn:
    def __init__(self):
        self.nodes: list[Node] = []
        self.scale = 1.0
        self.mask = "none"
        self.extra: Value | None = None
        self.fill = 0.0
        self.nan_to_zero = False
        self.zero_dead_rows = False


def _scores(rw: Rewriter, root: Node, s: Value, a: _Attn, reads: int = 1) -> Node | None:
    """Walk the logits back to the Q·K product, collecting scale and mask; None on a miss.

    ``reads``: how often the softmax reads the logits (twice when it is written out)."""
    seen_mask = seen_scale = False
    while True:
        p = _p(rw, s)
        if p is None:
            return None
        if p.op == "dot_general":
            return p
        if rw.num_uses(s) != reads:
            _miss(rw, root, f"the logits %{s.name} ({p.op}) have {rw.num_uses(s)} users",
                  "several-users")
            return None
        if p.op in ("mul", "div"):
            x, c = _scaled(rw, s, a.nodes)
            if c == 1.0 and x is s:
                _miss(rw, root, f"the logits are scaled by %{p.inputs[1].name}, not a constant",
                      "non-constant-operand")
                return None
            a.scale *= c
            seen_scale = True
            s, reads = x, 1
            continue
        if p.op == "convert":
            a.nodes.append(p)
            s, reads = p.inputs[0], 1
            continue
        if seen_scale:  # walking back: this mask comes before a scale of the logits
            _miss(rw, root, "the logits are scaled after the mask is applied",
                  "shape-not-supported")
            return None
        if seen_mask:
            _miss(rw, root, f"a second mask ({p.op}) is applied to the logits", "shape-not-supported")
            return None
        if p.op == "add":
            chain, bias = _pick_chain(rw, p.inputs)
            if chain is None or bias.type.dtype != s.type.dtype:
                return None
            a.mask, a.extra = "additive", bias
        elif p.op == "select":
            cond, t, f = p.inputs
            fill_t, fill_f = scalar(rw, t), scalar(rw, f)
            if fill_f is not None and _leads_to_dot(rw, t):
                a.mask, a.extra, a.fill, chain = "boolean", cond, fill_f, t
            elif fill_t is not None and _leads_to_dot(rw, f):
                a.mask, a.extra, a.fill, chain = "boolean_inverted", cond, fill_t, f
            else:
                _miss(rw, root, "the mask's fill value is not a constant", "non-constant-operand")
                return None
        else:
            _miss(rw, root, f"the logits go through {p.op}, which attention does not fuse",
                  "shape-not-supported")
            return None
        if chain.type != s.type:
            _miss(rw, root, f"the mask broadcasts the logits {chain.type} to {s.type}",
                  "shape-not-supported")
            return None
        a.nodes.append(p)
        seen_mask = True
        s, reads = chain, 1


def _leads_to_dot(rw: Rewriter, v: Value, depth: int = 6) -> bool:
    """Whether ``v`` is computed from a dot_general through scales/converts only."""
    for _ in range(depth):
        p = _p(rw, v)
        if p is None:
            return False
        if p.op == "dot_general":
            return True
        if p.op not in ("mul", "div", "convert"):
            return False
        v = p.inputs[0] if p.op == "convert" or scalar(rw, p.inputs[1]) is not None else p.inputs[1]
    return False


def _pick_chain(rw: Rewriter, ins) -> tuple[Value | None, Value | None]:
    a, b = ins
    if _leads_to_dot(rw, a):
        return a, b
    if _leads_to_dot(rw, b):
        return b, a
    return None, None


def _dead_rows(rw: Rewriter, probs: Value, a: _Attn) -> Value | None:
    """The bias when ``probs`` is ``where(max(bias) == -inf, 0, P)`` (nodes added to ``a``)."""
    sel = _p(rw, probs)
    if sel is None or sel.op != "select" or not _is_const(rw, sel.inputs[1], 0.0):
        return None
    cond, seen = sel.inputs[0], []
    b = _p(rw, cond)
    if b is not None and b.op == "broadcast_in_dim" and rw.num_uses(cond) == 1:
        seen.append(b)
        cond = b.inputs[0]
    eq = _p(rw, cond)
    mx = _p(rw, eq.inputs[0]) if eq is not None and eq.op == "eq" else None
    if (mx is None or mx.op != "reduce_max" or not _is_const(rw, eq.inputs[1], -math.inf)
            or tuple(mx.attrs["axes"]) != (mx.inputs[0].type.rank - 1,) or not mx.attrs.get("keepdims")):
        return None
    a.nodes.extend([*seen, eq, mx, sel])  # the select last: its input is the softmax
    return mx.inputs[0]


def _miss(rw: Rewriter, root: Node, why: str, reason: str) -> None:
    rw.remark("missed", f"did not fuse attention: {why}", root, reason=reason)


def match_attention(rw: Rewriter, root: Node):
    """``(nodes, operands, attrs)`` when ``root`` is the P·V product of an attention."""
    if root.op != "dot_general" or len(root.inputs) != 2:
        return None
    (lc, rc), (lb, rb) = root.attrs["contracting_dims"], root.attrs.get("batch_dims", ((), ()))
    probs, v = root.inputs
    v_first = False
    nb = len(lb)
    if probs.type.rank != nb + 2 or tuple(lb) != tuple(range(nb)) or tuple(lc) != (nb + 1,):
        # V·Pᵀ (jnp.einsum may put V first): the result is (batch..., feature, sequence)
        v, probs, lc, rc, lb, rb, v_first = probs, v, rc, lc, rb, lb, True
        if probs.type.rank != nb + 2 or tuple(lb) != tuple(range(nb)) or tuple(lc) != (nb + 1,):
            return None
    a = _Attn()
    a.nodes.append(root)
    pv = probs
    p = _p(rw, probs)
    if p is not None and p.op == "select":  # torch: where(isnan(P), 0, P)
        isnan = _p(rw, p.inputs[0])
        if (isnan is not None and isnan.op == "is_nan" and scalar(rw, p.inputs[1]) == 0.0
                and _same(rw, isnan.inputs[0], p.inputs[2])):
            a.nodes.extend([p, isnan])
            a.nan_to_zero = True
            pv = p.inputs[2]
    dead = _dead_rows(rw, pv, a)  # ONNX Attention: rows whose bias is all -inf give zeros
    if dead is not None:
        pv = a.nodes[-1].inputs[2]
    p = _p(rw, pv)
    if p is not None and p.op == "convert":
        a.nodes.append(p)
        pv = p.inputs[0]
    n_before = len(a.nodes)
    s = _softmax_input(rw, pv, a.nodes)
    if s is None:
        return None
    reads = 2 if len(a.nodes) - n_before > 1 else 1
    qk = _scores(rw, root, s, a, reads)
    if qk is None:
        return None
    if dead is not None and (a.mask != "additive" or not _same(rw, dead, a.extra)):
        return None
    a.zero_dead_rows = dead is not None
    a.nodes.append(qk)
    (qc, kc), (qb, kb) = qk.attrs["contracting_dims"], qk.attrs.get("batch_dims", ((), ()))
    q, k = qk.inputs
    qf, kf = _free(q.type.rank, qc, qb), _free(k.type.rank, kc, kb)
    vf = _free(v.type.rank, rc, rb)
    if len(qb) != nb or len(qc) != 1 or len(qf) != 1 or len(kf) != 1 or len(vf) != 1 \
            or len(rc) != 1:
        _miss(rw, root, "Q, K and V must each have one sequence and one feature dim "
              "besides the batch/head dims", "shape-not-supported")
        return None
    q, q_dims, sq = _operand(rw, q, (*qb, qf[0], qc[0]), a.nodes)
    k, k_dims, sk = _operand(rw, k, (*kb, kf[0], kc[0]), a.nodes)
    v, v_dims, _ = _operand(rw, v, (*rb, rc[0], vf[0]), a.nodes, scales=False)
    a.scale *= sq * sk
    if q.type.dtype not in ("f16", "bf16", "f32", "f64"):
        return None
    attrs = {"num_batch": nb, "q_dims": q_dims, "k_dims": k_dims, "v_dims": v_dims,
             "scale": float(a.scale),
             "mask": "boolean" if a.mask.startswith("boolean") else a.mask,
             "nan_to_zero": a.nan_to_zero, "v_first": v_first}
    if a.zero_dead_rows:
        attrs["zero_dead_rows"] = True
    operands = [q, k, v]
    if a.mask != "none":
        operands.append(a.extra)
    if a.mask.startswith("boolean"):  # where(mask, scores, fill) or where(mask, fill, scores)
        attrs["fill"] = float(a.fill)
        attrs["keep"] = a.mask == "boolean"
    return a, operands, attrs


@pattern("fuse-attention", ops="dot_general")
def fuse_attention(rw: Rewriter, node: Node) -> bool:
    """softmax(Q·Kᵀ·s + mask)·V (JAX and ONNX forms) -> fused.attention."""
    found = match_attention(rw, node)
    if found is None:
        return False
    a, operands, attrs = found
    return outline_operands(rw, a.nodes, _NAME, attrs, operands) is not None


PATTERNS = [fuse_attention]
