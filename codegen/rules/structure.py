"""Lowering of composites: the body is inlined into the surrounding trace."""
from __future__ import annotations

from ..lowering import lowering


@lowering("composite")
def _composite(ctx, node, *args):
    outs = ctx.run_region(node.body, args)
    return tuple(outs)
