"""What a pass receives besides the graph: an executor, calibration data, a remark log."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import Graph, Node
from ..errors import PassFailure

Executor = Callable[..., Callable[..., list]]
"""``executor(graph, jit=None) -> fn(*inputs) -> list of numpy outputs`` (wired to codegen by
the top level; ``jit`` is only passed when a pass asks for a choice, see PassContext.run)."""


class MissingPassData(PassFailure, ValueError):
    """A pass needs data (calibration inputs, ...) that the caller did not provide."""


@dataclass(frozen=True)
class Remark:
    """A structured note from a pass: what it changed, or why it chose not to."""

    pass_name: str
    kind: str  # applied | missed | note
    message: str
    node: str = ""  # %name of the node concerned
    data: tuple = ()  # (key, value) pairs for machine use

    def __str__(self) -> str:
        where = f" {self.node}:" if self.node else ""
        return f"[{self.pass_name}] {self.kind}:{where} {self.message}"

    def as_dict(self) -> dict:
        return {"pass": self.pass_name, "kind": self.kind, "message": self.message,
                "node": self.node, "data": dict(self.data)}


class Remarks(list):
    """A list of remarks that prints as one readable line per remark."""

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self) if self else "(no remarks)"

    def of_kind(self, kind: str) -> "Remarks":
        """The remarks of one kind (applied | missed | note)."""
        return Remarks(r for r in self if r.kind == kind)


@dataclass
class PassContext:
    """Services for passes; a pass must not reach for global state instead."""

    executor: Executor | None = None
    calibration: Sequence[tuple] | None = None  # list of input tuples (flat, graph order)
    data: dict[str, Any] = field(default_factory=dict)  # other named inputs (a teacher, labels)
    remarks: Remarks = field(default_factory=Remarks)
    pass_name: str = ""
    target: str = "cpu"  # the compile target; passes that measure do so only where it runs
    # XLA compiler options a pass chose for every executable of the compiled model
    # (``{"xla_cpu_experimental_ynn_fusion_type": ""}``); the pass manager resets it per
    # pipeline run and records it in each PassRecord.
    compiler_options: dict[str, str] = field(default_factory=dict)

    def remark(self, kind: str, message: str, node: Node | str | None = None, **data) -> None:
        """Record what the current pass did (``applied``), skipped (``missed``) or noticed."""
        if kind not in ("applied", "missed", "note"):
            raise ValueError(f"remark kind must be applied|missed|note, got {kind!r}")
        name = node if isinstance(node, str) else (f"%{node.name}" if node is not None else "")
        self.remarks.append(Remark(self.pass_name, kind, message, name, tuple(sorted(data.items()))))

    def require(self, what: str):
        """The context data a pass needs, or an error saying how to provide it."""
        value = self.calibration if what == "calibration" else self.data.get(what)
        if value is None or (what == "calibration" and len(value) == 0):
            raise MissingPassData(f"pass '{self.pass_name}' needs {what} data: pass "
                                  f"compile(..., {what}=...)")
        return value

    def run(self, graph: Graph, *inputs, jit: bool | None = None) -> list[np.ndarray]:
        """Execute ``graph`` on inputs through the wired executor.

        ``jit``: True compiles the graph as one XLA program, False runs it op by op; None
        lets the executor choose (it runs tiny graphs op by op).
        """
        if self.executor is None:
            raise MissingPassData(f"pass '{self.pass_name}' needs to run the model but no "
                                  "executor was provided")
        fn = self.executor(graph) if jit is None else self.executor(graph, jit=jit)
        return [np.asarray(o) for o in fn(*inputs)]
