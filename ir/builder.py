"""Building graphs: nodes get their output types from the op registry as they are added."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .graph import Attrs, Graph, Namer, Node, Value
from .registry import OpTypeError
from .types import TensorType, dtype_name, numpy_dtype
from .verify import node_output_types


def make_node(op: str, inputs: Sequence[Value], namer: Namer, *, regions: Sequence[Graph] = (),
              loc: str = "", names: Sequence[str] | None = None, **attrs) -> Node:
    """A node whose outputs are typed by the op's rule and named by ``namer``."""
    attrs_ = Attrs({k: v for k, v in attrs.items() if v is not None})
    proto = Node(op, tuple(inputs), (), attrs_, tuple(regions), loc)
    try:
        types = node_output_types(proto)
    except OpTypeError as e:
        where = f" [{loc}]" if loc else ""
        raise OpTypeError(f"{op}({', '.join(str(v.type) for v in inputs)}){where}: {e}") from None
    names = list(names) if names else [None] * len(types)
    outs = tuple(Value(namer(h), t) for h, t in zip(names, types))
    return proto.replace(outputs=outs)


class GraphBuilder:
    """Accumulates inputs, params and nodes, then builds an immutable Graph."""

    def __init__(self, name: str = "main", namer: Namer | None = None, loc: str = ""):
        self.name = name
        self.namer = namer or Namer(())
        self.inputs: list[Value] = []
        self.params: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.loc = loc  # default location stamped on nodes added without one

    def input(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(self.namer(name), type)
        self.inputs.append(v)
        return v

    def param(self, array, name: str | None = None) -> Value:
        """Add a weight array (kept as given; Graph copies it read-only) and refer to it."""
        name = self.namer(name or "const")
        self.params[name] = array
        return Value(name, TensorType.of(array))

    def op(self, op: str, *inputs: Value, regions: Sequence[Graph] = (), loc: str | None = None,
           names: Sequence[str] | None = None, **attrs):
        """Append a node; returns its output value (or a tuple if it has several)."""
        n = make_node(op, inputs, self.namer, regions=regions, loc=self.loc if loc is None else loc,
                      names=names, **attrs)
        self.nodes.append(n)
        return n.outputs[0] if len(n.outputs) == 1 else n.outputs

    def constant(self, value, dtype: str, shape=()) -> Value:
        """A scalar literal (broadcast to shape) as a ``constant`` node."""
        v = np.asarray(value, numpy_dtype(dtype)).item() if dtype not in ("bf16",) else float(value)
        if isinstance(v, complex):
            raise OpTypeError("complex literals must be params")
        return self.op("constant", value=v, dtype=dtype, shape=tuple(shape) or None)

    def array(self, array, name: str | None = None) -> Value:
        """A literal array: a scalar becomes a constant node, anything bigger a param."""
        arr = np.asarray(array)
        if arr.ndim == 0 and arr.dtype.kind in "biuf" and arr.dtype.itemsize <= 8:
            return self.constant(arr.item(), dtype_name(arr.dtype))
        return self.param(arr, name)

    def build(self, outputs: Sequence[Value], params: dict | None = None) -> Graph:
        return Graph(self.name, self.inputs, tuple(outputs), self.nodes,
                     {**(params or {}), **self.params})
