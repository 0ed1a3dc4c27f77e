"""Counts that describe a graph: nodes per op, params, bytes, FLOPs, sparsity."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .graph import Graph, Node
from .registry import OPS, Cost
from .types import TensorType


def op_label(n: Node) -> str:
    """How a node is counted: its op, or ``composite:<name>`` for composites."""
    return f"composite:{n.attrs.get('name', '?')}" if n.op == "composite" else n.op


def node_cost(n: Node, symbols: dict | None = None) -> Cost:
    """FLOPs and bytes of one node (a composite costs its body)."""
    if n.regions:
        total = Cost()
        for r in n.regions:
            for m in r.nodes:
                total = total + node_cost(m, symbols)
        return total
    od = OPS.get(n.op)
    if od is None:
        return Cost()
    return od.cost([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs, symbols)


@dataclass
class GraphStats:
    """A snapshot of a graph's size and work (symbolic dims counted as 1 unless bound)."""

    nodes: int = 0
    ops: Counter = field(default_factory=Counter)
    params: int = 0
    param_elems: int = 0
    param_bytes: int = 0
    param_zeros: int = 0
    flops: int = 0
    bytes_moved: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of weight elements that are exactly zero."""
        return self.param_zeros / self.param_elems if self.param_elems else 0.0

    def as_dict(self) -> dict:
        return {"nodes": self.nodes, "ops": dict(sorted(self.ops.items())), "params": self.params,
                "param_elems": self.param_elems, "param_bytes": self.param_bytes,
                "sparsity": round(self.sparsity, 6), "flops": self.flops,
                "bytes_moved": self.bytes_moved}


def graph_stats(g: Graph, symbols: dict | None = None) -> GraphStats:
    """Count nodes per op, params and their bytes and zeros, and total FLOPs/bytes."""
    s = GraphStats()
    for n in g.nodes:
        s.nodes += 1
        s.ops[op_label(n)] += 1
        c = node_cost(n, symbols)
        s.flops += c.flops
        s.bytes_moved += c.bytes
    for arr in g.params.values():
        s.params += 1
        s.param_elems += int(arr.size)
        s.param_bytes += TensorType.of(arr).nbytes()
        if not getattr(arr, "abstract", False):
            try:
                s.param_zeros += int(arr.size - np.count_nonzero(arr))
            except TypeError:
                pass
    return s
