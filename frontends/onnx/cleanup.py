"""Dead-code elimination for the imported graph (nodes and params nothing reads)."""
from __future__ import annotations

from ...ir import Graph


def eliminate_dead_code(g: Graph) -> Graph:
    """Drop nodes whose outputs nothing reads and params no live node uses."""
    live = {v.name for v in g.outputs}
    kept = []
    for n in reversed(g.nodes):
        if any(o.name in live for o in n.outputs):
            kept.append(n)
            live.update(v.name for v in n.inputs)
            for r in n.regions:
                live.update(v.name for m in r.walk() for v in m.inputs)
                live.update(v.name for v in r.outputs)
    kept.reverse()
    params = {k: a for k, a in g.params.items() if k in live}
    return Graph(g.name, g.inputs, g.outputs, kept, params, g.requires)
