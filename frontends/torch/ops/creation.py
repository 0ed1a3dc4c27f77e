"""Tensor-creating ATen ops: full, zeros/ones, arange, scalar_tensor, *_like."""
from __future__ import annotations

from ....ir import Value
from ....ir.dims import DimExpr
from ....ir.types import is_float
from ..registry import aten_op


def _fill(ctx, value, shape, dtype):
    if isinstance(value, (DimExpr, Value)):
        return ctx.broadcast_to(ctx.tensor(value, dtype), shape)
    if dtype == "bool":
        value = bool(value)
    elif not is_float(dtype):
        value = int(value)
    else:
        value = float(value)
    return ctx.op("constant", value=value, dtype=dtype, shape=tuple(shape) or None)


@aten_op("aten.full.default")
def _full(ctx, *args, **kwargs):
    value = args[-1] if ctx.target == "aten.full.default" else args[2]
    t = ctx.out_type()
    return _fill(ctx, value, t.shape, t.dtype)


@aten_op("aten.full_like.default")
def _full_like(ctx, x, fill_value, **kwargs):
    t = ctx.out_type()
    return _fill(ctx, fill_value, t.shape, t.dtype)


@aten_op("aten.empty.memory_format", "aten.empty_strided.default", "aten.empty_permuted.default")
def _zeros(ctx, *args, **kwargs):
    t = ctx.out_type()
    return _fill(ctx, 0, t.shape, t.dtype)


@aten_op("aten.scalar_tensor.default")
def _scalar_tensor(ctx, s, **kwargs):
    return ctx.tensor(s, ctx.out_dtype)


@aten_op("aten.arange.start_step")
def _arange(ctx, *args, **kwargs):
    nums = [a for a in args if isinstance(a, (int, float, DimExpr))]
    if ctx.target == "aten.arange.default":
        start, step = 0, 1
    elif ctx.target == "aten.arange.start":
        start, step = nums[0], 1
    else:
        start, step = nums[0], (nums[2] if len(nums) > 2 else kwargs.get("step", 1))
    t = ctx.out_type()
    y = ctx.op("iota", dtype=t.dtype, shape=tuple(t.shape), axis=0)
    if step != 1:
        y = ctx.op("mul", y, ctx.scalar(step, t.dtype))
    if not (isinstance(start, (int, float)) and start == 0):
        y = ctx.op("add", y, ctx.scalar(start, t.dtype))
    return y
