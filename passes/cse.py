"""Common-subexpression elimination: merge nodes (and optionally params) that compute the same."""
from __future__ import annotations

import hashlib

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.printer import fmt_attrs
from ..ir.registry import OPS
from .context import PassContext
from .registry import Option, register_pass
from .rewrite import Rewriter, apply_patterns, pattern


def region_key(g: Graph) -> tuple:
    """A structural key of a region: equal for bodies that differ only in value names."""
    local = {v.name: f"${i}" for i, v in enumerate(g.inputs)}

    def ref(v: Value) -> str:
        return local.get(v.name, "@" + v.name)  # not local: a param of the root graph

    nodes = []
    for n in g.nodes:
        nodes.append((n.op, tuple(ref(v) for v in n.inputs), fmt_attrs(n.attrs),
                      tuple(str(o.type) for o in n.outputs), tuple(region_key(r) for r in n.regions)))
        for o in n.outputs:
            local[o.name] = f"${len(local)}"
    return (tuple(str(v.type) for v in g.inputs), tuple(nodes), tuple(ref(v) for v in g.outputs))


def node_key(n: Node) -> tuple:
    """What makes two nodes compute the same: op, inputs, attrs, regions, result types."""
    ins = [v.name for v in n.inputs]
    if "commutative" in OPS[n.op].traits:
        ins.sort()
    # Attributes compare by their printed form: 0.0 and -0.0 (equal in Python) stay apart.
    return (n.op, tuple(ins), fmt_attrs(n.attrs), tuple(str(o.type) for o in n.outputs),
            tuple(region_key(r) for r in n.regions))


def duplicate_params(params) -> dict[str, str]:
    """Param name -> the first param with the same dtype, shape and bytes."""
    first: dict[tuple, list[str]] = {}
    dup: dict[str, str] = {}
    for name, arr in params.items():
        if getattr(arr, "abstract", False):  # declared only: its bytes are not the weights
            continue
        a = np.ascontiguousarray(arr)
        key = (a.dtype.str, a.shape, hashlib.sha1(a.tobytes()).hexdigest())
        for other in first.setdefault(key, []):
            if a.tobytes() == np.ascontiguousarray(params[other]).tobytes():
                dup[name] = other
                break
        else:
            first[key].append(name)
    return dup


def _rename_refs(g: Graph, mapping: dict[str, str]) -> Graph:
    """A region with its references to renamed params pointing at the new names."""
    def fix(n: Node) -> Node:
        ins = tuple(Value(mapping[v.name], v.type) if v.name in mapping else v for v in n.inputs)
        return n.replace(inputs=ins, regions=tuple(_rename_refs(r, mapping) for r in n.regions))
    outs = tuple(Value(mapping[v.name], v.type) if v.name in mapping else v for v in g.outputs)
    return g.replace(nodes=tuple(fix(n) for n in g.nodes), outputs=outs)


def _region_refs(n: Node) -> set[str]:
    return {v.name for r in n.regions for m in r.walk() for v in m.inputs} | {
        v.name for r in n.regions for v in r.outputs}


@register_pass("cse", options=[
    Option("params", bool, False, "also merge params with identical dtype, shape and bytes")])
def cse(graph: Graph, ctx: PassContext, params: bool = False) -> Graph:
    """Merge nodes with the same op, inputs, attributes and regions (and equal constants)."""
    dup = duplicate_params(graph.params) if params else {}
    for name, keep in dup.items():
        ctx.remark("note", f"param @{name} is identical to @{keep}; merging its uses")

    @pattern("merge-duplicate-params")
    def merge_duplicate_params(rw: Rewriter, node: Node):
        names = {v.name for v in node.inputs} | _region_refs(node)
        if not dup or not names & dup.keys():
            return None
        ins = [Value(dup[v.name], v.type) if v.name in dup else v for v in node.inputs]
        regions = [_rename_refs(r, dup) for r in node.regions]
        new = rw.op(node.op, *ins, regions=regions, loc=node.loc, **dict(node.attrs))
        merged = ", ".join(f"@{n} -> @{dup[n]}" for n in sorted(names & dup.keys()))
        rw.remark("applied", f"reads merged params ({merged})", node)
        return rw.replace(node, new)

    @pattern("cse")
    def merge_same(rw: Rewriter, node: Node):
        seen: dict = rw.state.setdefault("cse", {})
        key = node_key(node)
        first = seen.get(key)
        if first is None:
            seen[key] = node
            return None
        rw.remark("applied", f"{node.op} duplicates %{first.name}", node)
        return rw.replace(node, first.outputs)

    return apply_patterns(graph, [merge_duplicate_params, merge_same], ctx)
