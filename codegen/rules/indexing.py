"""Lowerings of gathers and scatters."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ...ir import numpy_dtype
from ..lowering import lowering


@lowering("take")
def _take(ctx, node, x, idx):
    return jnp.take(x, idx, axis=node.attrs["axis"] % x.ndim, mode="clip")


@lowering("take_along_axis")
def _take_along_axis(ctx, node, x, idx):
    return jnp.take_along_axis(x, idx, axis=node.attrs["axis"] % x.ndim, mode="clip")


def _coords(idx):
    """The k coordinate arrays of the last dim of ``idx`` (for x[tuple(...)])."""
    return tuple(idx[..., i] for i in range(idx.shape[-1]))


@lowering("gather_nd")
def _gather_nd(ctx, node, x, idx):
    b = node.attrs.get("batch_dims", 0)
    if b == 0:
        return x[_coords(idx)]
    # batch dims: flatten them to one and vmap the unbatched gather over it
    batch = x.shape[:b]
    n = math.prod(batch)
    xs = jnp.reshape(x, (n,) + x.shape[b:])
    ids = jnp.reshape(idx, (n,) + idx.shape[b:])
    out = jax.vmap(lambda xi, ii: xi[_coords(ii)])(xs, ids)
    return jnp.reshape(out, batch + out.shape[1:])


@lowering("scatter_nd")
def _scatter_nd(ctx, node, x, idx, upd):
    at = x.at[_coords(idx)]
    how = node.attrs.get("reduction", "none")
    if how == "none":
        return at.set(upd, mode="drop")
    return {"add": at.add, "mul": at.multiply, "max": at.max, "min": at.min}[how](upd, mode="drop")


@lowering("shape_of")
def _shape_of(ctx, node, x):
    a = node.attrs
    dims = x.shape[a.get("start", 0):a.get("end") if a.get("end") is not None else x.ndim]
    return jnp.array(dims, dtype=numpy_dtype(a.get("dtype", "i64")))
