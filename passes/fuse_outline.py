"""Outline with named operands: fusions whose lowering reads its operands in a fixed order."""
from __future__ import annotations

from typing import Sequence

from ..ir import Graph, Node, Value
from .rewrite import Rewriter, _topo_order


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
    """Replace ``nodes`` (one root) by a composite ``name`` whose inputs are ``operands``.

    Unlike ``Rewriter.outline``, params given as operands become body inputs (a lowering rule
    reads them as arguments); scalar constants the nodes read are copied into the body, so a
    constant shared by many layers stays outside. Refuses with a ``missed`` remark when an
    intermediate value has users outside the set or another outside value flows in.
    """
    nodes = _topo_order(list({id(n): n for n in nodes}.values()), rw)
    inside = {o.name for n in nodes for o in n.outputs}
    reads: dict[str, int] = {}
    for n in nodes:
        for v in (*n.inputs, *n.region_reads):
            reads[rw.resolve(v).name] = reads.get(rw.resolve(v).name, 0) + 1
    root = nodes[-1]
    for n in nodes[:-1]:
        for o in n.outputs:
            extra = rw.num_uses(o) - reads.get(o.name, 0)
            if extra > 0:
                rw.remark("missed", f"did not form {name}: %{o.name} ({n.op}) has {extra} "
                          "user(s) outside the match", root, value=o.name, reason="several-users")
                return None
    namer = rw.namer
    local: dict[str, Value] = {}
    body_inputs: list[Value] = []
    for v in operands:
        v = rw.resolve(v)
        b = Value(namer(), v.type)
        local.setdefault(v.name, b)
        body_inputs.append(b)
    body_nodes: list[Node] = []
    escaped: list[Value] = []

    def inner(v: Value) -> Value:
        v = rw.resolve(v)
        if v.name in local:
            return local[v.name]
        if rw.is_param(v):
            return v  # params are read by name from the root graph
        p = rw.producer(v)
        if p is not None and p.op == "constant" and v.name not in inside:
            copy = p.replace(outputs=(Value(namer(), v.type),))
            body_nodes.append(copy)
            local[v.name] = copy.outputs[0]
            return local[v.name]
        escaped.append(v)
        return v

    for n in nodes:
        ins = tuple(inner(v) for v in n.inputs)
        outs = tuple(Value(namer(), o.type) for o in n.outputs)
        local.update({o.name: m for o, m in zip(n.outputs, outs)})
        body_nodes.append(n.replace(inputs=ins, outputs=outs))
    if escaped:
        rw.remark("missed", f"did not form {name}: %{escaped[0].name} flows into the match "
                  "but is not one of its operands", root, reason="unexpected-operand")
        return None
    body = Graph(name, tuple(body_inputs), tuple(local[o.name] for o in root.outputs),
                 tuple(body_nodes))
    out = rw.op("composite", *(rw.resolve(v) for v in operands), regions=[body], loc=root.loc, name=name, **attrs)
    fused = rw.new_nodes[-1]
    rw.replace(root, out)
    for n in nodes[:-1]:
        rw._forget_reads(n)  # dead now: their reads no longer count as uses
    rw.remark("applied", f"formed {name}", fused, nodes=len(nodes))
    return fused
