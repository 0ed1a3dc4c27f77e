"""ONNX frontend: an ONNX model (path, bytes or ModelProto) -> IR Graph.

Converters live in ``ops/<family>.py``; each is registered with ``@onnx_op("Op", since=N)``
and receives a ``NodeContext`` plus the node's inputs as IR values (see ``context.py``).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ...ir import Graph
from . import ops as _ops  # noqa: F401  (fills the converter table)
from .context import NodeContext
from .converter import Importer
from .errors import (NeedsInputValuesError, NeedsKnownValue, OnnxImportError, Unsupported,
                     UnsupportedNode, UnsupportedNodesError)
from .loader import OnnxLoadError, load
from .registry import CONVERTERS, lookup, onnx_op


def import_onnx(model, *, name: str | None = None, input_shapes: Mapping | None = None,
                input_values: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Convert an ONNX model to IR.

    ``input_shapes`` overrides graph input shapes (``{name: (dims...)}``, symbols allowed).
    ``input_values`` specializes the graph to given values of some inputs: they stay graph
    inputs, but converters and folding may use their values (Reshape's shape, Slice's
    starts...). Call the compiled graph through ``guard_specialized`` so a call with other
    values is refused instead of silently wrong.
    """
    loaded = load(model)
    imp = Importer(loaded.model, loaded.label, input_shapes=input_shapes, input_values=input_values)
    return imp.run(name)


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


class SpecializationError(ValueError):
    """A specialized model was called with a value other than the one it was built for."""


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
           "import_onnx_specialized", "lookup", "onnx_op"]
