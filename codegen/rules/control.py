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

    length = ctx.dim(a["length"])
    if not isinstance(length, int):
        return _scan_symbolic(ctx, node, step, carry, xs, length)
    final, ys = lax.scan(step, carry, xs, length=length, reverse=a.get("reverse", False))
    return tuple(final) + tuple(ys)


def _scan_symbolic(ctx, node, step, carry, xs, length):
    """A scan of symbolic length (under export, where lax.scan needs a constant length): a
    fori_loop writing each step's ys into buffers shaped from the IR types."""
    import jax.numpy as jnp
    from ...ir import numpy_dtype
    reverse = node.attrs.get("reverse", False)
    nc = node.attrs["num_carry"]
    bufs = tuple(jnp.zeros(ctx.shape(v.type.shape), numpy_dtype(v.type.dtype))
                 for v in node.outputs[nc:])

    def body(i, state):
        c, ys = state
        t = length - 1 - i if reverse else i
        x = tuple(lax.dynamic_index_in_dim(v, t, keepdims=False) for v in xs)
        c, y = step(c, x)
        ys = tuple(lax.dynamic_update_index_in_dim(b, u.astype(b.dtype), t, 0) for b, u in zip(ys, y))
        return tuple(c), ys

    final, ys = lax.fori_loop(0, length, body, (tuple(carry), bufs))
    return tuple(final) + tuple(ys)
