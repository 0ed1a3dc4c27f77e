"""Lowerings of data-movement ops."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ...ir import numpy_dtype
from ..lowering import lowering


@lowering("reshape")
def _reshape(ctx, node, x):
    return jnp.reshape(x, ctx.shape(node.attrs["shape"]))


@lowering("transpose")
def _transpose(ctx, node, x):
    return lax.transpose(x, node.attrs["permutation"])


@lowering("broadcast_in_dim")
def _broadcast_in_dim(ctx, node, x):
    return lax.broadcast_in_dim(x, ctx.shape(node.attrs["shape"]), node.attrs["broadcast_dimensions"])


@lowering("slice")
def _slice(ctx, node, x):
    a = node.attrs
    return lax.slice(x, ctx.shape(a["start"]), ctx.shape(a["limit"]), a.get("strides"))


@lowering("dynamic_slice")
def _dynamic_slice(ctx, node, x, *starts):
    return lax.dynamic_slice(x, starts, ctx.shape(node.attrs["sizes"]))


@lowering("dynamic_update_slice")
def _dynamic_update_slice(ctx, node, x, upd, *starts):
    return lax.dynamic_update_slice(x, upd, starts)


@lowering("concatenate")
def _concatenate(ctx, node, *xs):
    return lax.concatenate(xs, node.attrs["axis"] % xs[0].ndim)


@lowering("pad")
def _pad(ctx, node, x, pv):
    a = node.attrs
    interior = a.get("interior") or (0,) * x.ndim
    return lax.pad(x, pv, list(zip(a["low"], a["high"], interior)))


@lowering("squeeze")
def _squeeze(ctx, node, x):
    return lax.squeeze(x, [a % x.ndim for a in node.attrs["axes"]])


@lowering("expand_dims")
def _expand_dims(ctx, node, x):
    rank = x.ndim + len(node.attrs["axes"])
    return lax.expand_dims(x, sorted(a % rank for a in node.attrs["axes"]))


@lowering("rev")
def _rev(ctx, node, x):
    return lax.rev(x, [a % x.ndim for a in node.attrs["axes"]])


@lowering("iota")
def _iota(ctx, node):
    a = node.attrs
    shape = ctx.shape(a["shape"])
    return lax.broadcasted_iota(numpy_dtype(a["dtype"]), shape, a["axis"] % max(len(shape), 1))


@lowering("constant")
def _constant(ctx, node):
    a = node.attrs
    return jnp.full(ctx.shape(a.get("shape", ())), a["value"], numpy_dtype(a["dtype"]))
