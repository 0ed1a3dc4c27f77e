"""Resampling: nearest and bilinear upsampling.

Each spatial axis becomes one ``take`` with a constant index vector (nearest) or one
contraction with a constant interpolation matrix (bilinear), computed here from the static
sizes as ATen computes its source indices. (Reflection/replication pads reach the frontend
already decomposed into index arithmetic.)
"""
from __future__ import annotations

import numpy as np

from ....ir import Value
from ....ir.dims import DimExpr
from ._util import acc_dtype
from ..registry import aten_op


def _static(ctx, x: Value, axis: int, what: str) -> int:
    size = x.shape[axis]
    if isinstance(size, DimExpr):
        ctx.unsupported(f"{what} over a symbolic dim {size}")
    return size


def _scales(scale_factors, n: int):
    return [None] * n if not scale_factors else [float(s) for s in scale_factors]


def _source_scale(size_in: int, size_out: int, scale, align_corners: bool) -> float:
    """ATen's area_pixel_compute_scale."""
    if align_corners:
        return (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else size_in / size_out


@aten_op("aten.upsample_nearest2d.vec")
def _upsample_nearest(ctx, x, output_size, scale_factors):
    nsp = x.type.rank - 2
    out = ctx.out_type().shape
    scales = _scales(scale_factors, nsp)
    for k in range(nsp):
        a = 2 + k
        n_in, n_out = _static(ctx, x, a, "nearest upsampling"), out[a]
        if isinstance(n_out, DimExpr):
            ctx.unsupported(f"nearest upsampling to a symbolic size {n_out}")
        scale = np.float32(_source_scale(n_in, n_out, scales[k], False))
        src = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64),
                         n_in - 1)
        if n_in != n_out or np.any(src != np.arange(n_in)):
            x = ctx.op("take", x, ctx.const(src.astype(np.int32)), axis=a)
    return x


@aten_op("aten.upsample_bilinear2d.vec")
def _upsample_linear(ctx, x, output_size, align_corners, scale_factors):
    nsp = x.type.rank - 2
    out = ctx.out_type().shape
    scales = _scales(scale_factors, nsp)
    y = ctx.convert(x, acc_dtype(x.dtype))
    for k in range(nsp):
        n_in, n_out = _static(ctx, x, 2 + k, "linear upsampling"), out[2 + k]
        scale = _source_scale(n_in, n_out, scales[k], bool(align_corners))
        dst = np.arange(n_out, dtype=np.float64)
        src = dst * scale if align_corners else np.maximum(scale * (dst + 0.5) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        m = np.zeros((n_in, n_out))
        np.add.at(m, (i0, np.arange(n_out)), 1.0 - lam)
        np.add.at(m, (i1, np.arange(n_out)), lam)
        # contracting the current first spatial dim moves the new one last: after nsp steps
        # the spatial dims are back in order
        y = ctx.op("dot_general", y, ctx.const(m, y.dtype), contracting_dims=((2,), (0,)))
    return ctx.convert(y, x.dtype)
