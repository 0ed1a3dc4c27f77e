"""FFTs: ``_fft_r2c`` (rfft, or a full FFT of real input) and ``_fft_c2r`` (irfft)."""
from __future__ import annotations

import math

from ....ir.dims import DimExpr
from ._util import axis
from ..registry import aten_op


def _scale(ctx, y, dims, x_shape, normalization: int, inverse: bool):
    """ATen's normalization (0 none, 1 1/sqrt(n), 2 1/n) from numpy's (ifft: 1/n)."""
    n = 1
    for d in dims:
        if isinstance(x_shape[d], DimExpr):
            ctx.unsupported(f"an FFT over a symbolic dim {x_shape[d]}")
        n *= x_shape[d]
    want = {0: 1.0, 1: 1 / math.sqrt(n), 2: 1.0 / n}[int(normalization)]
    have = 1.0 / n if inverse else 1.0
    if abs(want / have - 1) < 1e-12:
        return y
    real = "f32" if y.dtype in ("c64", "f32") else "f64"
    return ctx.op("mul", y, ctx.convert(ctx.scalar(want / have, real), y.dtype))


@aten_op("aten._fft_r2c.default")
def _fft_r2c(ctx, x, dim, normalization, onesided):
    dims = [axis(d, x.type.rank) for d in dim]
    y = x
    if onesided:
        last = dims[-1]
        y = ctx.op("fft", y, kind="rfft", axis=last, length=x.shape[last])
        rest = dims[:-1]
    else:
        y = ctx.convert(y, "c128" if x.dtype == "f64" else "c64")
        rest = dims
    for d in rest:
        y = ctx.op("fft", y, kind="fft", axis=d, length=x.shape[d])
    return _scale(ctx, y, dims, x.shape, normalization, inverse=False)


@aten_op("aten._fft_c2r.default")
def _fft_c2r(ctx, x, dim, normalization, last_dim_size):
    dims = [axis(d, x.type.rank) for d in dim]
    y = x
    for d in dims[:-1]:
        y = ctx.op("fft", y, kind="ifft", axis=d, length=x.shape[d])
    y = ctx.op("fft", y, kind="irfft", axis=dims[-1], length=int(last_dim_size))
    return _scale(ctx, y, dims, y.shape, normalization, inverse=True)
