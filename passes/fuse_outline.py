"""Outline with named operands: fusions whose lowering reads its operands in a fixed order."""
from __future__ import annotations

from typing import Sequence

from ..ir import Node, Value
from .rewrite import Rewriter


def scalar(rw: Rewriter, v: Value):
    """The float value of a scalar (or splat) constant or single-valued param, else None."""
    c = rw.constant_value(v)
    try:
        return None if c is None or isinstance(c, bool) else float(c)
    except (TypeError, ValueError):
        return None


def is_constant_node(rw: Rewriter, v: Value) -> bool:
    p = rw.producer(v)
    return p is not None and p.op == "constant"


def outline_operands(rw: Rewriter, nodes: Sequence[Node], name: str, attrs: dict,
                     operands: Sequence[Value]) -> Node | None:
    """``Rewriter.outline`` with fixed operands (see there), and an ``applied`` remark."""
    fused = rw.outline(nodes, name, attrs, operands=operands)
    if fused is not None:
        nodes = list({id(n): n for n in nodes}.values())
        rw.remark("applied", f"formed {name}", fused, nodes=len(nodes))
    return fused
