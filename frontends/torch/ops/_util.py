"""Helpers shared by the ATen converters: axes, counts, low-precision accumulation."""
from __future__ import annotations

from ....ir import Value
from ....ir.dims import DimExpr


def axis(d: int, rank: int) -> int:
    """A torch dim (negative counts from the end; rank 0 takes 0 and -1)."""
    return d % rank if rank else 0


def axes(dims, rank: int) -> tuple[int, ...]:
    """Torch dims (None or [] meaning all) as sorted non-negative axes."""
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return tuple(sorted({axis(d, rank) for d in dims}))


def count(ctx, x: Value, over: tuple[int, ...], dtype: str) -> Value:
    """The number of elements over ``over`` axes of ``x`` as a scalar (run time if symbolic)."""
    n = 1
    for a in over:
        n = n * x.shape[a]
    if isinstance(n, DimExpr):
        return ctx.convert(ctx.imp.dim_value(n, ctx.loc), dtype)
    return ctx.scalar(n, dtype)


def acc_dtype(dtype: str) -> str:
    """Where torch accumulates: f16/bf16 in f32."""
    return "f32" if dtype in ("f16", "bf16") else dtype


def keep_shape(x: Value, over) -> tuple:
    return tuple(1 if i in over else d for i, d in enumerate(x.shape))
