"""Lowerings of quantize and dequantize; a quantize -> dequantize pair is differentiable (STE).

``quantize`` computes the low-precision tensor; ``dequantize`` of it, with the same scale and
zero point, is fake-quant. JAX cannot differentiate through an integer tensor, so the
dequantize lowering recognises its producer (the quantize lowered just before in the same
trace) and computes the pair as one ``custom_vjp`` function of the float input: the same
numbers, with straight-through gradients (1 inside the clip range, 0 outside) and the LSQ
gradient for the scale. The integer tensor is then dead and XLA drops it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp

from ...ir import numpy_dtype
from ...ir.ops.quant import INT_QUANT_DTYPES, quant_range
from ..lowering import lowering


def _compute_dtype(*arrays):
    """f64 when an operand is f64, else f32: quantization arithmetic is done in float."""
    return jnp.float64 if any(a is not None and a.dtype == jnp.float64 for a in arrays) \
        else jnp.float32


def expand(p, shape, axis: int, block_size: int, ct):
    """A scale or zero point (per tensor, axis or block) shaped to broadcast against ``shape``."""
    p = p.astype(ct)
    rank = len(shape)
    if p.ndim == 0 or (p.ndim == 1 and p.shape[0] == 1 and not block_size):
        return p.reshape(())
    axis %= rank
    if block_size:
        return jnp.repeat(p, block_size, axis=axis) \
            [tuple(slice(0, shape[axis]) if i == axis else slice(None) for i in range(rank))]
    return p.reshape(tuple(shape[axis] if i == axis else 1 for i in range(rank)))


def round_clip(v, z, dtype: str):
    """The quantized value (as float) of ``v = x / scale``: integer dtypes round half to even
    then add the zero point; float8/4 add it and round to the dtype; both saturate."""
    lo, hi = quant_range(dtype)
    if dtype in INT_QUANT_DTYPES:
        return jnp.clip(jnp.round(v) + z, lo, hi)
    low = numpy_dtype(dtype)
    return jnp.clip(v + z, lo, hi).astype(low).astype(v.dtype)


def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the transpose of broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


@lru_cache(maxsize=None)
def fake_quant_fn(dtype: str):
    """``fq(x, scale, zero_point) -> dequantize(quantize(x))`` with STE/LSQ gradients."""
    lo, hi = quant_range(dtype)

    @jax.custom_vjp
    def fq(x, s, z):
        return (round_clip(x / s, z, dtype) - z) * s

    def fwd(x, s, z):
        v = x / s
        q = round_clip(v, z, dtype)
        return (q - z) * s, (v, q, s, z)

    def bwd(res, g):
        v, q, s, z = res
        inside = (v + z >= lo) & (v + z <= hi)
        dx = jnp.where(inside, g, jnp.zeros_like(g))
        # LSQ: d out / d s is (q - z) - v inside the range, the clip bound - z outside.
        ds = g * ((q - z) - jnp.where(inside, v, jnp.zeros_like(v)))
        return dx, _unbroadcast(ds, s.shape), jnp.zeros_like(z)

    fq.defvjp(fwd, bwd)
    return fq


@dataclass(frozen=True)
class _Quantized:
    """What a quantize lowering leaves for a dequantize of its result (same trace)."""

    q: object
    x: object
    scale: object
    zero_point: object
    axis: int
    block_size: int


def _memo(ctx) -> dict:
    memo = getattr(ctx, "quantized", None)
    if memo is None:
        memo = ctx.quantized = {}
    return memo


@lowering("quantize")
def _quantize(ctx, node, x, scale, zp=None):
    a = node.attrs
    ct = _compute_dtype(x, scale)
    axis, bs = a.get("axis", 1), a.get("block_size", 0)
    s = expand(scale, x.shape, axis, bs, ct)
    z = expand(zp, x.shape, axis, bs, ct) if zp is not None else jnp.zeros((), ct)
    q = round_clip(x.astype(ct) / s, z, a["dtype"])
    if a["dtype"] in INT_QUANT_DTYPES:
        q = q.astype(jnp.int32)  # an exact integer on its way to a narrow type
    out = q.astype(numpy_dtype(a["dtype"]))
    _memo(ctx)[node.output.name] = _Quantized(out, x, scale, zp, axis, bs)
    return out


@lowering("dequantize")
def _dequantize(ctx, node, q, scale, zp=None):
    a = node.attrs
    axis, bs = a.get("axis", 1), a.get("block_size", 0)
    out_dtype = numpy_dtype(a["dtype"]) if a.get("dtype") else scale.dtype
    src = _memo(ctx).get(node.inputs[0].name)
    if (src is not None and src.q is q and src.scale is scale and src.zero_point is zp
            and (src.axis, src.block_size) == (axis, bs)):
        # fake-quant: one differentiable function of the float input
        ct = _compute_dtype(src.x, scale)
        s = expand(scale, q.shape, axis, bs, ct)
        z = expand(zp, q.shape, axis, bs, ct) if zp is not None else jnp.zeros((), ct)
        dtype = node.inputs[0].dtype
        return fake_quant_fn(dtype)(src.x.astype(ct), s, z).astype(out_dtype)
    ct = _compute_dtype(scale)
    y = q.astype(ct)
    if zp is not None:
        y = y - expand(zp, q.shape, axis, bs, ct)
    return (y * expand(scale, q.shape, axis, bs, ct)).astype(out_dtype)
