"""rewrite-pool: small pooling windows as element-wise max/min/add of strided slices (issue 16).

XLA:CPU runs ``reduce_window`` as a scalar loop over each window: on SqueezeNet at batch 8 its
three 3x3/2 max pools took 14% of the time, 2.5x onnxruntime's pools
(``benchmarks/profile_models.py``). Written as the k*k strided slices of the (identity-padded)
input combined element-wise, XLA fuses them into one vectorized loop over the output (measured
1.0-4x faster per pool, 2 threads). Max and min are exact; a sum is reassociated (the order of
the k*k additions), as any fusion may.
"""
from __future__ import annotations

import itertools

from ..ir import Node
from ..ir.registry import OPS
from .registry import Option, register_pass
from .rewrite import Rewriter, apply_patterns, pattern

COMBINE = {"max": "max", "min": "min", "sum": "add"}
# Element-wise ops costly enough that recomputing them per overlapping slice (XLA fuses the
# producer into every slice it reads) costs more than reduce_window: AlexNet's max pools after
# LRN (pow, div) measured 1.04-1.17x slower at batch 8 when rewritten.
COSTLY = {"pow", "div", "exp", "expm1", "log", "log1p", "rsqrt", "sqrt", "cbrt", "tanh",
          "logistic", "erf", "erf_inv", "sin", "cos", "tan", "atan2", "lgamma", "digamma"}
IDENTITY = {"max": float("-inf"), "min": float("inf"), "sum": 0.0}
FLOATS = ("f16", "bf16", "f32", "f64")


def _costly_producer(rw: Rewriter, v, depth: int = 6) -> str | None:
    """The first costly element-wise op among the element-wise producers of ``v``, if any."""
    n = rw.producer(v)
    if n is None or depth == 0 or n.regions:
        return None
    if n.op in COSTLY:
        return n.op
    od = OPS.get(n.op)
    if od is None or "elementwise" not in od.traits:
        return None  # XLA materializes a conv, a reduction, a concat: nothing is recomputed
    for x in n.inputs:
        found = _costly_producer(rw, x, depth - 1)
        if found:
            return found
    return None


def _overlapping(node: Node) -> bool:
    """Some input element falls in more than one window."""
    a, rank = node.attrs, node.inputs[0].type.rank
    strides = a.get("window_strides") or (1,) * rank
    wdil = a.get("window_dilation") or (1,) * rank
    return any((w - 1) * d + 1 > s for w, s, d in zip(a["window_dimensions"], strides, wdil))


def _why_not(rw: Rewriter, node: Node, max_taps: int) -> str | None:
    """Why this reduce_window is left as it is (None: it is rewritten)."""
    a, x = node.attrs, node.inputs[0]
    if a["kind"] not in COMBINE:
        return f"kind {a['kind']!r} has no element-wise form here"
    if x.type.dtype not in FLOATS:
        return f"its element type {x.type.dtype} is not a float"
    if any(d != 1 for d in a.get("base_dilation") or ()):
        return "base_dilation > 1"
    taps = 1
    for w in a["window_dimensions"]:
        taps *= w
    if taps > max_taps:
        return f"its window has {taps} elements (more than max_taps={max_taps})"
    if taps == 1:
        return "its window has one element"
    windowed = [k for k, w in enumerate(a["window_dimensions"]) if w > 1
                or (a.get("window_strides") or (1,) * x.type.rank)[k] != 1
                or tuple((a.get("padding") or ((0, 0),) * x.type.rank)[k]) != (0, 0)]
    if any(not isinstance(x.type.shape[k], int) for k in windowed):
        return "a pooled dim is symbolic"
    costly = _costly_producer(rw, x) if _overlapping(node) else None
    if costly:
        return f"its input is computed by {costly}, which XLA would recompute for each " \
               "overlapping window"
    return None


def _slices(rw: Rewriter, node: Node):
    """out = combine over window taps t of slice_t(pad(x, identity))."""
    a, x = node.attrs, node.inputs[0]
    rank = x.type.rank
    win = a["window_dimensions"]
    strides = a.get("window_strides") or (1,) * rank
    padding = a.get("padding") or ((0, 0),) * rank
    wdil = a.get("window_dilation") or (1,) * rank
    kind = a["kind"]
    if any(tuple(p) != (0, 0) for p in padding):
        fill = rw.op("constant", loc=node.loc, value=IDENTITY[kind], dtype=x.type.dtype)
        x = rw.op("pad", x, fill, loc=node.loc, low=tuple(p[0] for p in padding),
                  high=tuple(p[1] for p in padding))
    out_shape = node.output.type.shape
    acc = None
    for tap in itertools.product(*(range(w) for w in win)):
        start = [t * d for t, d in zip(tap, wdil)]
        limit = [x.type.shape[k] if win[k] == 1 and strides[k] == 1 else
                 start[k] + (out_shape[k] - 1) * strides[k] + 1 for k in range(rank)]
        sl = rw.op("slice", x, loc=node.loc, start=tuple(start), limit=tuple(limit),
                   strides=tuple(strides))
        acc = sl if acc is None else rw.op(COMBINE[kind], acc, sl, loc=node.loc)
    return acc


def pool_patterns(max_taps: int):
    """The pattern with its window limit."""

    @pattern("rewrite-pool", ops="reduce_window")
    def rewrite(rw: Rewriter, node: Node):
        why = _why_not(rw, node, max_taps)
        if why is not None:
            rw.remark("missed", f"left {node.attrs['kind']} pool: {why}", node,
                      reason="pool-kept")
            return None
        win = "x".join(str(w) for w in node.attrs["window_dimensions"] if w > 1)
        rw.remark("applied", f"{node.attrs['kind']} pool ({win}) as element-wise "
                             f"{COMBINE[node.attrs['kind']]} of strided slices", node)
        return rw.replace(node, _slices(rw, node))

    return [rewrite]


@register_pass("rewrite-pool", options=[
    Option("max_taps", int, 16, "largest window (elements) rewritten; larger ones stay "
           "reduce_window (a global pool is a reduction)", range=(1, None))])
def rewrite_pool(graph, ctx, max_taps: int = 16):
    """Small max/min/sum pooling windows as element-wise combinations of strided slices."""
    target = getattr(ctx, "target", "cpu") if ctx is not None else "cpu"
    if target != "cpu":  # the form is for XLA:CPU's scalar reduce_window loop
        if any(n.op == "reduce_window" for n in graph.nodes):
            ctx.remark("note", f"pools kept: the rewrite is for XLA:CPU, the target is {target}")
        return graph
    return apply_patterns(graph, pool_patterns(max_taps), ctx)
