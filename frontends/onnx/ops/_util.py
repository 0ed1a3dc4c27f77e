"""Small helpers shared by converter modules (axes, broadcasting, dtype agreement)."""
from __future__ import annotations

from ....ir import Value
from ....ir.ops._rules import broadcast_shapes
from ....ir.types import is_float, is_int


def norm_axis(axis: int, rank: int) -> int:
    """A non-negative axis (ONNX allows negative axes from opset 11 on)."""
    return axis + rank if axis < 0 else axis


def binary(ctx, op: str, a: Value, b: Value) -> Value:
    """``op(a, b)`` with numpy broadcasting; ``b`` is cast to ``a``'s dtype if they differ."""
    return ctx.op(op, a, ctx.convert(b, a.dtype))


def variadic(ctx, op: str, values) -> Value:
    """Left fold of a binary op over several inputs (Sum, Max, Min...)."""
    values = [v for v in values if v is not None]
    out = values[0]
    for v in values[1:]:
        out = binary(ctx, op, out, v)
    return out


def unidirectional(ctx, v: Value, shape) -> Value:
    """``v`` broadcast to ``shape`` when it is not already (ONNX unidirectional broadcast)."""
    return v if tuple(v.shape) == tuple(shape) else ctx.broadcast_to(v, broadcast_shapes(v.shape, shape))


__all__ = ["binary", "broadcast_shapes", "is_float", "is_int", "norm_axis", "unidirectional", "variadic"]
