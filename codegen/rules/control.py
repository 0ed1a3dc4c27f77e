"""Lowerings of control flow: cond, while_loop and scan map onto their jax.lax namesakes."""
from __future__ import annotations

from jax import lax

from ..lowering import lowering


@lowering("cond")
def _cond(ctx, node, pred, *operands):
    then, other = node.regions
    return tuple(lax.cond(pred, lambda *a: tuple(ctx.run_region(then, a)),
                          lambda *a: tuple(ctx.run_region(other, a)), *operands))


@lowering("while_loop")
def _while_loop(ctx, node, *operands):
    n = node.attrs["num_carry"]
    cond, body = node.regions
    invariant = tuple(operands[n:])

    def cond_fn(carry):
        return ctx.run_region(cond, carry + invariant)[0]

    def body_fn(carry):
        return tuple(ctx.run_region(body, carry + invariant))

    return tuple(lax.while_loop(cond_fn, body_fn, tuple(operands[:n])))


@lowering("scan")
def _scan(ctx, node, *operands):
    a = node.attrs
    nc, nx = a["num_carry"], a["num_xs"]
    carry, xs, invariant = tuple(operands[:nc]), tuple(operands[nc:nc + nx]), tuple(operands[nc + nx:])
    (body,) = node.regions

    def step(c, x):
        outs = ctx.run_region(body, c + tuple(x) + invariant)
        return tuple(outs[:nc]), tuple(outs[nc:])

    final, ys = lax.scan(step, carry, xs, length=ctx.dim(a["length"]), reverse=a.get("reverse", False))
    return tuple(final) + tuple(ys)
