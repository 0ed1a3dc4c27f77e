"""ONNX frontend: an ONNX model (path, bytes or ModelProto) -> IR Graph.

Writing a converter (``ops/<family>.py``, imported from ``ops/__init__.py``)::

    @onnx_op("LeakyRelu")                     # since=1; add since=N for a changed version
    def _leaky_relu(ctx, x):                  # inputs are IR Values (None: absent optional)
        alpha = ctx.attr("alpha", 0.01)       # attribute with its ONNX default
        return ctx.op("leaky_relu", x, alpha=alpha)   # one Value per ONNX output

``ctx.opset`` is the node's opset, ``ctx.known(v)`` the import-time value of ``v`` (numpy or
None), ``ctx.require_known(v, "what")`` demands one (graph inputs get specialized, see
``import_onnx``), ``ctx.unsupported(reason)`` gives up on the node (all such nodes are
reported together), ``ctx.const``/``ctx.scalar``/``ctx.convert``/``ctx.broadcast_to`` help.
Nodes whose inputs are all known are folded before any converter runs; ops without a
converter whose ONNX schema has a function body are expanded into composites.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ...ir import Graph, TensorType
from . import ops as _ops  # noqa: F401  (fills the converter table)
from .context import NodeContext
from .converter import Importer
from .errors import (NeedsInputValuesError, NeedsKnownValue, OnnxImportError, Unsupported,
                     UnsupportedNode, UnsupportedNodesError)
from .dtypes import value_info_type
from .loader import LoadedOnnx, OnnxLoadError, load
from .registry import CONVERTERS, lookup, onnx_op


def import_onnx(model, *, name: str | None = None, input_shapes: Mapping | None = None,
                input_values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Convert an ONNX model to IR.

    ``model``: a path, bytes, ModelProto, or what ``load`` returned (read once, import often).
    ``input_shapes`` overrides graph input shapes (``{name: (dims...)}``, symbols allowed):
    concrete sizes specialize the import to a call's shapes.
    ``input_values`` specializes the graph to given values of some inputs: they stay graph
    inputs, but converters and folding may use their values (Reshape's shape, Slice's
    starts...). Call the compiled graph through ``guard_specialized`` so a call with other
    values is refused instead of silently wrong.
    """
    loaded = model if isinstance(model, LoadedOnnx) else load(model)
    imp = Importer(loaded.model, loaded.label, input_shapes=input_shapes, input_values=input_values)
    return imp.run(name)


def input_types(model) -> list[tuple[str, TensorType]]:
    """``[(name, type)]`` of the graph inputs an import would create, without converting nodes.

    ``model`` may be anything ``load`` reads, or what it returned. Used to check call
    arguments of a model whose import waits for a call's shapes or values.
    """
    loaded = model if isinstance(model, LoadedOnnx) else load(model)
    g = loaded.model.graph
    init = {t.name for t in g.initializer}
    out = []
    for vi in g.input:
        if vi.name in init and loaded.model.ir_version < 4:
            continue  # before IR 4 initializers were listed as inputs too (see Importer.run)
        out.append((vi.name, value_info_type(vi, None, None, loaded.label)))
    return out


def import_onnx_specialized(model, available: Mapping[str, np.ndarray], *, name: str | None = None,
                            input_shapes: Mapping | None = None, max_rounds: int = 8):
    """``(graph, bound)``: import, binding inputs from ``available`` as long as converters ask.

    Only the inputs some node needs at import time are bound (see ``NeedsInputValuesError``).
    """
    bound: dict[str, np.ndarray] = {}
    for _ in range(max_rounds):
        try:
            return import_onnx(model, name=name, input_shapes=input_shapes,
                               input_values=bound or None), bound
        except NeedsInputValuesError as e:
            missing = [i for i in e.inputs if i not in available]
            if missing or all(i in bound for i in e.inputs):
                raise
            bound.update({i: np.asarray(available[i]) for i in e.inputs})
    raise OnnxImportError(f"specialization did not settle after {max_rounds} rounds")


from ...compiled import SpecializationError  # noqa: E402  (one error class for both paths)


def guard_specialized(fn: Callable, graph: Graph, bound: Mapping[str, np.ndarray]) -> Callable:
    """Wrap ``fn(*inputs)`` (graph input order) so each bound input must equal its bound value."""
    if not bound:
        return fn
    positions = {v.name: i for i, v in enumerate(graph.inputs)}
    checks = [(positions[k], k, np.asarray(v)) for k, v in bound.items() if k in positions]

    def guarded(*args):
        for i, k, want in checks:
            got = np.asarray(args[i])
            if got.shape != want.shape or not np.array_equal(got, want):
                raise SpecializationError(
                    f"input {k!r} was specialized to {want.tolist()} at import time but this "
                    f"call passes {got.tolist()}; re-import with the new value")
        return fn(*args)

    return guarded


__all__ = ["CONVERTERS", "NeedsInputValuesError", "NeedsKnownValue", "NodeContext",
           "OnnxImportError", "OnnxLoadError", "SpecializationError", "Unsupported",
           "UnsupportedNode", "UnsupportedNodesError", "guard_specialized", "import_onnx",
           "import_onnx_specialized", "input_types", "LoadedOnnx", "lookup", "onnx_op"]
