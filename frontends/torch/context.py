"""What an ATen converter sees: the FX node, its output types, and a way to emit IR for it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...ir import TensorType, Value, make_node, numpy_dtype
from ...ir.dims import DimExpr
from ...ir.registry import OpTypeError
from ..builder_ops import ShapeHelpers
from ...ir.types import is_float, is_int
from .errors import Unsupported
from .types import ir_dtype, tensor_type

if TYPE_CHECKING:  # pragma: no cover
    from .converter import Importer


class Missing:
    """An output tensorsmith does not compute (pooling indices, saved statistics); a node
    that reads it is reported as unsupported."""

    def __init__(self, what: str):
        self.what = what


class NodeContext(ShapeHelpers):
    """Emits the IR of one FX node; handed to its converter as ``ctx``.

    Every IR node gets ``loc=`` the module path and source line of the FX node.
    """

    def __init__(self, imp: "Importer", node, loc: str):
        self.imp, self.node, self.loc = imp, node, loc

    # --- the node's outputs, as torch typed them -------------------------------------------
    @property
    def target(self) -> str:
        return str(self.node.target)

    def out_type(self, i: int | None = None) -> TensorType:
        """The IR type torch gave output ``i`` (the only output when None)."""
        val = self.node.meta.get("val")
        if i is not None:
            val = val[i]
        return tensor_type(val, self.imp.sym_names)

    @property
    def out_dtype(self) -> str:
        val = self.node.meta.get("val")
        if isinstance(val, (tuple, list)):
            val = val[0]
        return ir_dtype(val.dtype)

    def unsupported(self, reason: str):
        """Give up on this node (it is listed with every other unsupported node)."""
        raise Unsupported(reason)

    # --- emitting IR -----------------------------------------------------------------------
    def op(self, op: str, *inputs: Value, **attrs):
        """Append an IR node; its output Value (a tuple if several)."""
        try:
            n = make_node(op, inputs, self.imp.namer, loc=self.loc, **attrs)
        except OpTypeError as e:
            raise Unsupported(f"cannot express as IR: {e}") from None
        self.imp.nodes.append(n)
        return n.outputs[0] if len(n.outputs) == 1 else n.outputs

    def const(self, value, dtype: str | None = None) -> Value:
        """A literal: a constant node for a scalar, a param for an array."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(numpy_dtype(dtype))
        return self.imp.literal(arr)

    def scalar(self, value, dtype: str) -> Value:
        """A scalar of ``dtype``: from a Python number, or computed from a symbolic dim."""
        if isinstance(value, DimExpr):
            return self.convert(self.imp.dim_value(value, self.loc), dtype)
        if isinstance(value, Value):
            return self.convert(value, dtype)
        return self.op("constant", value=np.asarray(value).astype(numpy_dtype(dtype)).item(),
                       dtype=dtype)

    def tensor(self, x, dtype: str | None = None) -> Value:
        """``x`` (a Value, Python number or dim) as a Value, cast to ``dtype`` if given."""
        if isinstance(x, Value):
            return x if dtype is None else self.convert(x, dtype)
        if dtype is None:
            dtype = "bool" if isinstance(x, bool) else "i64" if isinstance(x, (int, DimExpr)) \
                else "f32"
        return self.scalar(x, dtype)

    def operands(self, *xs, dtype: str | None = None) -> list[Value]:
        """Tensors and Python scalars as Values of one dtype: ``dtype``, else torch's
        promotion (a Python scalar takes the tensor's dtype unless float meets int)."""
        if dtype is None:
            dtype = promote(xs)
        return [self.tensor(x, dtype) for x in xs]


def promote(xs: Sequence) -> str:
    """torch's result type for tensors and Python scalars (dims count as ints)."""
    import torch
    tensors = [x for x in xs if isinstance(x, Value)]
    if not tensors:
        return "f32" if any(isinstance(x, float) for x in xs) else "i64"
    from .types import torch_dtype
    dims0 = [torch.empty((), dtype=torch_dtype(t.dtype)) if t.type.rank == 0
             else torch.empty((1,), dtype=torch_dtype(t.dtype)) for t in tensors]
    scalars = [x if not isinstance(x, DimExpr) else 1 for x in xs if not isinstance(x, Value)]
    out = dims0[0]
    for other in [*dims0[1:], *scalars]:
        out = torch.empty(out.shape, dtype=torch.result_type(out, other))
    return ir_dtype(out.dtype)


def float_of(dtype: str) -> str:
    """The float type an op on ``dtype`` computes in (ints and bools become f32)."""
    return dtype if is_float(dtype) else "f32"


__all__ = ["NodeContext", "promote", "float_of", "is_int"]
