"""Lowering of composites: the body is inlined into the surrounding trace."""
from __future__ import annotations

from ..lowering import lowering
from .fused import lower_fused
from .softmax import composite_softmax


@lowering("composite")
def _composite(ctx, node, *args):
    safe = composite_softmax(node)  # jax.nn.softmax: see softmax.py for why not the body
    if safe is not None:
        return (safe(args[0]),)
    done = lower_fused(ctx, node, args)  # fused.layer_norm, fused.attention, ...: fused.py
    if done is not None:
        return done
    outs = ctx.run_region(node.body, args)
    return tuple(outs)
