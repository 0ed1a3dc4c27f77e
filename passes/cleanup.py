"""Clean-up passes: dead-code elimination and inlining of composites."""
from __future__ import annotations

import fnmatch

from ..ir import Graph, Node
from .context import PassContext
from .registry import Option, register_pass, register_pipeline
from .rewrite import Rewriter, apply_patterns, pattern, remove_dead


@register_pass("dce")
def dce(graph: Graph, ctx: PassContext) -> Graph:
    """Remove nodes whose results are never used and params no node reads."""
    result = remove_dead(graph)
    dropped = len(graph.nodes) - len(result.nodes)
    if dropped or len(result.params) != len(graph.params):
        ctx.remark("applied", f"removed {dropped} dead nodes and "
                              f"{len(graph.params) - len(result.params)} unused params")
    return result


def inline_body(rw: Rewriter, node: Node) -> list:
    """Copy a composite's body in place of the node; returns the values of its outputs."""
    env = {v.name: outer for v, outer in zip(node.body.inputs, node.inputs)}
    for m in node.body.nodes:
        ins = [env.get(v.name, v) for v in m.inputs]
        outs = rw.op(m.op, *ins, regions=m.regions, loc=m.loc or node.loc, **dict(m.attrs))
        outs = outs if isinstance(outs, tuple) else (outs,)
        env.update({o.name: new for o, new in zip(m.outputs, outs)})
    return [env.get(v.name, v) for v in node.body.outputs]


@register_pass("inline", options=[Option("names", str, "*", "glob of composite names to inline")])
def inline(graph: Graph, ctx: PassContext, names: str = "*") -> Graph:
    """Replace composite nodes by their bodies (all, or those whose name matches a glob)."""

    @pattern("inline", ops="composite")
    def inline_composite(rw: Rewriter, node: Node):
        if not fnmatch.fnmatchcase(node.attrs.get("name", ""), names):
            return None
        rw.remark("applied", f"inlined composite {node.attrs.get('name')!r}", node)
        return rw.replace(node, inline_body(rw, node))

    return apply_patterns(graph, [inline_composite], ctx)


register_pipeline("default", "canonicalize,cse,fold-constants,dce")
# Everything that measured as never slower on CPU (benchmarks/fuse.py, layout.py,
# fuse_vs_unfused.py), in the order the passes need: layout before fuse (it does not re-lay
# out convs inside composites), fold-batchnorm before layout; small pools as slices after
# layout (it sinks transposes through reduce_window, not through k*k slices). Not `layout{
# grouped=keep}`: on ShuffleNet it measured 0.95x at batch 1 but 1.11-1.17x at batch 8
# (benchmarks/pipeline_ab.py, load 4). Not `default` yet: see README.
register_pipeline("optimize", "canonicalize,cse,fold-constants,fold-batchnorm,layout,"
                              "rewrite-grouped-conv,rewrite-pool,fuse,dce")
register_pipeline("none", "")  # compile(..., passes="none"): the model as imported
