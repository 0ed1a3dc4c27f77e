"""What a converter sees: the ONNX node, its attributes, and a way to emit IR for it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from onnx import AttributeProto, NodeProto, numpy_helper

from ...ir import TensorType, Value, dtype_name, make_node
from ...ir.registry import OpTypeError
from ..builder_ops import ShapeHelpers
from .errors import NeedsKnownValue, Unsupported

if TYPE_CHECKING:  # pragma: no cover
    from .converter import Scope

_REQUIRED = object()


def attribute_value(a: AttributeProto):
    """A plain Python value for an ONNX attribute (tensors become numpy arrays)."""
    t = a.type
    if t == AttributeProto.FLOAT:
        return float(a.f)
    if t == AttributeProto.INT:
        return int(a.i)
    if t == AttributeProto.STRING:
        return a.s.decode("utf-8", "replace")
    if t == AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    if t == AttributeProto.GRAPH:
        return a.g
    if t == AttributeProto.FLOATS:
        return tuple(float(x) for x in a.floats)
    if t == AttributeProto.INTS:
        return tuple(int(x) for x in a.ints)
    if t == AttributeProto.STRINGS:
        return tuple(s.decode("utf-8", "replace") for s in a.strings)
    if t == AttributeProto.TENSORS:
        return tuple(numpy_helper.to_array(x) for x in a.tensors)
    if t == AttributeProto.GRAPHS:
        return tuple(a.graphs)
    if t == AttributeProto.TYPE_PROTO:
        return a.tp
    raise Unsupported(f"attribute {a.name!r} has unsupported kind {AttributeProto.AttributeType.Name(t)}")


class NodeContext(ShapeHelpers):
    """Emits the IR of one ONNX node; handed to its converter as ``ctx``.

    ``ctx.opset`` is the node's opset (its domain's version in the model), ``ctx.since`` the
    version the chosen converter was registered for. Every IR node gets ``loc=`` the ONNX
    node's name.
    """

    def __init__(self, scope: "Scope", node: NodeProto, opset: int, since: int,
                 inputs: Sequence[Value | None], loc: str):
        self.scope, self.node, self.opset, self.since = scope, node, opset, since
        self.inputs = list(inputs)
        self.attrs = {a.name: a for a in node.attribute}
        self.loc = loc

    # --- the node -------------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def name(self) -> str:
        return self.loc

    @property
    def num_outputs(self) -> int:
        """Outputs the model asks for (trailing optional outputs omitted or named '')."""
        return len(self.node.output)

    def output_used(self, i: int) -> bool:
        """Whether output ``i`` exists and has a name (optional outputs may be '')."""
        return i < len(self.node.output) and bool(self.node.output[i])

    def attr(self, name: str, default=_REQUIRED):
        """The attribute's plain value, ``default`` if absent (an error if required)."""
        a = self.attrs.get(name)
        if a is None:
            if default is _REQUIRED:
                raise Unsupported(f"required attribute {name!r} is missing")
            return default
        return attribute_value(a)

    def has_attr(self, name: str) -> bool:
        return name in self.attrs

    # --- known values ---------------------------------------------------------------------
    def known(self, v: Value | None) -> np.ndarray | None:
        """The value of ``v`` if it is computable at import time (constants, initializers,
        static shapes, specialized inputs), else None."""
        return None if v is None else self.scope.known_ir(v)

    def require_known(self, v: Value | None, what: str) -> np.ndarray:
        """``known(v)``, or an error: NeedsKnownValue when ``v`` comes from graph inputs
        whose values could be bound with ``import_onnx(..., input_values=)``."""
        arr = self.known(v)
        if arr is not None:
            return arr
        if v is None:
            raise Unsupported(f"{what} is missing")
        deps = self.scope.input_deps(v)
        if deps:
            raise NeedsKnownValue(deps, f"{what} must be known at import time")
        raise Unsupported(f"{what} must be known at import time (it is computed at run time)")

    def require(self, expr, reason: str) -> None:
        """Record that the model needs ``expr >= 0`` of its symbols (checked at each new call
        signature, passed to jax.export as a constraint); refuse the node if it is false now."""
        from ...ir.dims import dim_ge
        from ...ir.graph import Requirement
        ok = dim_ge(expr, 0)
        if ok is False:
            raise Unsupported(f"{reason}: {Requirement(expr).condition()} cannot hold")
        if ok is None:
            self.scope.imp.requires.append(Requirement(expr, self.loc, reason))

    def unsupported(self, reason: str):
        """Give up on this node (it is listed with every other unsupported node)."""
        raise Unsupported(reason)

    # --- emitting IR ----------------------------------------------------------------------
    def op(self, op: str, *inputs: Value, regions=(), **attrs):
        """Append an IR node; its output Value (a tuple if several)."""
        try:
            n = make_node(op, inputs, self.scope.namer, regions=regions, loc=self.loc, **attrs)
        except OpTypeError as e:
            raise Unsupported(f"cannot express as IR: {e}") from None
        self.scope.emit(n)
        return n.outputs[0] if len(n.outputs) == 1 else n.outputs

    def const(self, value, dtype: str | None = None) -> Value:
        """A literal (scalar: a constant node; array: a param) whose value is known."""
        arr = np.asarray(value) if dtype is None else np.asarray(value).astype(_np(dtype))
        return self.scope.literal(arr)

    def scalar(self, value, like: Value | str) -> Value:
        """A scalar literal of ``like``'s dtype (or the dtype named)."""
        dtype = like if isinstance(like, str) else like.dtype
        return self.const(np.asarray(value).astype(_np(dtype)))

    def subgraph(self, graph, input_types: Sequence[TensorType], name: str = "body"):
        """Convert a graph attribute (If/Loop/Scan body) to a region.

        Returns ``(region, captured)``: the region's inputs are ``input_types`` followed by
        one input per outer value the body reads; ``captured`` are those outer values, to be
        passed to the node after its own operands.
        """
        return self.scope.convert_subgraph(graph, list(input_types), name, self.loc)


def _np(dtype: str):
    from ...ir import numpy_dtype
    return numpy_dtype(dtype)


__all__ = ["NodeContext", "attribute_value", "dtype_name"]
