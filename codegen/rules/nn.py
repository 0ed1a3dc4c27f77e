"""Lowerings of dot_general, conv, pooling and batch-norm (softmax: softmax.py)."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ...ir import numpy_dtype
from ..lowering import lowering


def _dtype(node):
    t = node.attrs.get("preferred_element_type")
    return numpy_dtype(t) if t else None


@lowering("dot_general")
def _dot_general(ctx, node, a, b):
    return lax.dot_general(a, b, (node.attrs["contracting_dims"],
                                  node.attrs.get("batch_dims", ((), ()))),
                           preferred_element_type=_dtype(node))


@lowering("conv")
def _conv(ctx, node, lhs, rhs):
    a = node.attrs
    nsp = lhs.ndim - 2
    return lax.conv_general_dilated(
        lhs, rhs,
        window_strides=a.get("window_strides") or (1,) * nsp,
        padding=a.get("padding") or ((0, 0),) * nsp,
        lhs_dilation=a.get("lhs_dilation"), rhs_dilation=a.get("rhs_dilation"),
        dimension_numbers=a["dimension_numbers"],
        feature_group_count=a.get("feature_group_count", 1),
        batch_group_count=a.get("batch_group_count", 1),
        preferred_element_type=_dtype(node))


def _window_init(kind, dtype):
    if kind == "sum":
        return jnp.zeros((), dtype), lax.add
    if kind == "prod":
        return jnp.ones((), dtype), lax.mul
    if jnp.issubdtype(dtype, jnp.floating):
        lo, hi = -jnp.inf, jnp.inf
    else:
        info = jnp.iinfo(dtype)
        lo, hi = info.min, info.max
    return (jnp.asarray(lo, dtype), lax.max) if kind == "max" else (jnp.asarray(hi, dtype), lax.min)


@lowering("reduce_window")
def _reduce_window(ctx, node, x):
    a = node.attrs
    init, fn = _window_init(a["kind"], x.dtype)
    return lax.reduce_window(x, init, fn, a["window_dimensions"],
                             a.get("window_strides") or (1,) * x.ndim,
                             a.get("padding") or ((0, 0),) * x.ndim,
                             a.get("base_dilation"), a.get("window_dilation"))


@lowering("batch_norm")
def _batch_norm(ctx, node, x, scale, bias, mean, var):
    axis = node.attrs.get("axis", 1) % x.ndim
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    eps = node.attrs.get("epsilon", 1e-5)
    inv = scale * lax.rsqrt(var + jnp.asarray(eps, var.dtype))
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)
