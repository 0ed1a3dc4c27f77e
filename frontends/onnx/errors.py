"""Errors of the ONNX frontend; each names the user's node, op type and opset."""
from __future__ import annotations

from dataclasses import dataclass
from ...errors import ModelImportError


class OnnxImportError(ModelImportError, ValueError):
    """The model cannot be turned into IR (the message says which node and why)."""


class Unsupported(Exception):
    """Raised inside a converter: this node cannot be converted (collected, not fatal at once)."""


class NeedsKnownValue(Exception):
    """Raised inside a converter: an input must be known at import time; ``inputs`` are
    the graph inputs it is computed from (bind them with ``input_values=`` to specialize)."""

    def __init__(self, inputs, reason: str = ""):
        super().__init__(reason)
        self.inputs = tuple(sorted(inputs))
        self.reason = reason


@dataclass(frozen=True)
class UnsupportedNode:
    """One node the frontend could not convert."""

    name: str
    op_type: str
    domain: str
    opset: int
    reason: str
    needs: tuple[str, ...] = ()  # graph inputs whose values it needs at import time

    def __str__(self) -> str:
        dom = self.domain or "ai.onnx"
        return f"{self.name} ({self.op_type}, domain {dom}, opset {self.opset}): {self.reason}"


class UnsupportedNodesError(OnnxImportError, NotImplementedError):
    """Every node of the model that cannot be converted, listed at once."""

    def __init__(self, label: str, nodes: list[UnsupportedNode]):
        self.nodes = list(nodes)
        lines = "\n".join(f"  - {n}" for n in self.nodes)
        super().__init__(f"{label}: {len(self.nodes)} unsupported node"
                         f"{'s' if len(self.nodes) != 1 else ''}:\n{lines}")


class NeedsInputValuesError(UnsupportedNodesError):
    """Some nodes need graph inputs' values at import time (shape-like inputs).

    Retry with ``import_onnx(model, input_values={name: array})``: the graph is then
    specialized to those values, and ``guard_specialized`` checks them at call time.
    ``nodes`` lists the nodes that need values first, then any other unsupported nodes
    (which may only fail because those values were unknown).
    """

    def __init__(self, label: str, inputs: tuple[str, ...], needing: list[UnsupportedNode],
                 others: list[UnsupportedNode] = ()):
        self.inputs = tuple(inputs)
        self.nodes = list(needing) + list(others)
        lines = "\n".join(f"  - {n}" for n in needing)
        more = "\n".join(f"  - {n}" for n in others)
        msg = (f"{label}: nodes need the values of graph input(s) "
               f"{', '.join(repr(i) for i in self.inputs)} at import time; specialize with "
               f"tensorsmith.frontends.onnx.import_onnx(model, input_values={{name: array}}) "
               f"and compile the graph it returns:\n{lines}")
        if others:
            msg += f"\nand {len(others)} other unsupported node(s), perhaps because of them:\n{more}"
        OnnxImportError.__init__(self, msg)
