"""Lowerings of reductions, scans, sort and top-k."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ...ir import numpy_dtype
from ..lowering import lowering

_REDUCE = {"reduce_sum": lax.reduce_sum, "reduce_max": lax.reduce_max,
           "reduce_min": lax.reduce_min, "reduce_prod": lax.reduce_prod,
           "reduce_and": lax.reduce_and, "reduce_or": lax.reduce_or, "reduce_xor": lax.reduce_xor}


def _keep(y, axes, keepdims):
    return lax.expand_dims(y, sorted(axes)) if keepdims and axes else y


def _reduction(fn):
    def rule(ctx, node, x):
        axes = tuple(sorted(a % x.ndim for a in node.attrs["axes"]))
        return _keep(fn(x, axes), axes, node.attrs.get("keepdims", False))
    return rule


for _op, _fn in _REDUCE.items():
    lowering(_op)(_reduction(_fn))


def _argreduce(fn):
    def rule(ctx, node, x):
        a = node.attrs
        axis = a["axis"] % x.ndim
        dtype = numpy_dtype(a.get("index_dtype", "i32"))
        if a.get("select_last_index", False):
            n = x.shape[axis]
            y = (n - 1) - fn(lax.rev(x, (axis,)), axis, dtype)
        else:
            y = fn(x, axis, dtype)
        return _keep(y, (axis,), a.get("keepdims", False))
    return rule


lowering("argmax")(_argreduce(lax.argmax))
lowering("argmin")(_argreduce(lax.argmin))

_SCANS = {"cumsum": lax.cumsum, "cumprod": lax.cumprod, "cummax": lax.cummax,
          "cummin": lax.cummin, "cumlogsumexp": lax.cumlogsumexp}
def _scan_identity(op, dtype):
    """The value an exclusive scan starts from; integers have no infinities."""
    if op == "cumsum":
        return 0
    if op == "cumprod":
        return 1
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return info.min if op == "cummax" else info.max
    return jnp.inf if op == "cummin" else -jnp.inf  # cummax, cumlogsumexp


def _scan(op, fn):
    def rule(ctx, node, x):
        a = node.attrs
        axis, reverse = a["axis"] % x.ndim, a.get("reverse", False)
        y = fn(x, axis, reverse=reverse)
        if a.get("exclusive", False):
            # Shift by one along the axis, filling with the scan's identity.
            n = x.shape[axis]
            pad = [(0, 0, 0)] * x.ndim
            pad[axis] = (0, 1, 0) if reverse else (1, 0, 0)
            start = [0] * x.ndim
            start[axis] = 1 if reverse else 0
            limit = list(x.shape)
            limit[axis] = n + 1 if reverse else n
            y = lax.slice(lax.pad(y, jnp.asarray(_scan_identity(op, y.dtype), y.dtype), pad), start, limit)
        return y
    return rule


for _op, _fn in _SCANS.items():
    lowering(_op)(_scan(_op, _fn))


@lowering("sort")
def _sort(ctx, node, *xs):
    a = node.attrs
    axis = a.get("axis", -1) % xs[0].ndim
    if a.get("descending", False):
        # Sort by the negated key; integers/bools by their bitwise complement to avoid overflow.
        keys = [(-k if jnp.issubdtype(k.dtype, jnp.floating) else ~k) for k in xs[:a.get("num_keys", 1)]]
        outs = lax.sort(keys + list(xs), dimension=axis, is_stable=a.get("stable", True),
                        num_keys=a.get("num_keys", 1))
        return tuple(outs[len(keys):])
    return tuple(lax.sort(xs, dimension=axis, is_stable=a.get("stable", True),
                          num_keys=a.get("num_keys", 1)))


@lowering("top_k")
def _top_k(ctx, node, x):
    a = node.attrs
    axis = a.get("axis", -1) % x.ndim
    moved = jnp.moveaxis(x, axis, -1)
    if a.get("largest", True):
        vals, idx = lax.top_k(moved, a["k"])
    else:
        keys = -moved if jnp.issubdtype(x.dtype, jnp.floating) else ~moved
        _, idx = lax.top_k(keys, a["k"])
        vals = jnp.take_along_axis(moved, idx, axis=-1)
    idx = idx.astype(numpy_dtype(a.get("index_dtype", "i32")))
    return jnp.moveaxis(vals, -1, axis), jnp.moveaxis(idx, -1, axis)
