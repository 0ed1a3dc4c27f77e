"""What a pass receives besides the graph: an executor, calibration data, a remark log."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..ir import Graph, Node
from ..errors import PassFailure

Executor = Callable[..., Callable[..., list]]
"""``executor(graph, jit=None) -> fn(*inputs) -> list of numpy outputs`` (wired to codegen by
the top level; ``jit`` is only passed when a pass asks for a choice, see PassContext.run)."""


class MissingPassData(PassFailure, ValueError):
    """A pass needs data (calibration inputs, ...) that the caller did not provide."""


class BadCalibrationData(PassFailure, ValueError):
    """Calibration data a pass cannot use (NaN/Inf, wrong number of inputs)."""


PROGRESS_MIN_BATCHES = 8  # a calibration over this many batches shows a progress bar


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
    progress: bool = True  # a progress bar on long calibration runs
    # Compiled executors by graph (held so the id stays valid): a pass that runs one graph
    # on many batches compiles it and uploads its params once.
    _executors: dict = field(default_factory=dict, repr=False)
    # What each pass reports for machines (the quantization debugger's table, ...): the pass
    # manager moves it into the pass's record (``PassRecord.data``).
    pass_data: dict[str, Any] = field(default_factory=dict)

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
        return [np.asarray(o) for o in self.compiled(graph, jit=jit)(*inputs)]

    def compiled(self, graph: Graph, jit: bool | None = None) -> Callable[..., list]:
        """The executor's function for ``graph``, built once and reused for every call (one
        compile, one upload of the params), however many batches run through it."""
        if self.executor is None:
            raise MissingPassData(f"pass '{self.pass_name}' needs to run the model but no "
                                  "executor was provided")
        key = (id(graph), jit)
        hit = self._executors.get(key)
        if hit is None or hit[0] is not graph:
            fn = self.executor(graph) if jit is None else self.executor(graph, jit=jit)
            if len(self._executors) >= 4:  # bounded: old graphs and their device params go
                self._executors.pop(next(iter(self._executors)))
            hit = self._executors[key] = (graph, fn)
        return hit[1]

    def release(self) -> None:
        """Drop the cached executors (and the device copies of their params)."""
        self._executors.clear()

    def calibration_batches(self, graph: Graph) -> list[tuple]:
        """The calibration inputs, checked: one array per graph input, all finite.

        NaN/Inf would silently become a scale; the error names the input and the batch.
        """
        batches = self.require("calibration")
        names = [v.name for v in graph.inputs]
        for b, batch in enumerate(batches):
            if len(batch) != len(names):
                raise BadCalibrationData(
                    f"pass '{self.pass_name}': calibration batch {b} has {len(batch)} arrays, "
                    f"the model takes {len(names)} inputs ({', '.join('%' + n for n in names)})")
            for name, arr in zip(names, batch):
                a = np.asarray(arr)
                if a.dtype.kind in "fc" and not np.isfinite(a).all():
                    bad = "NaN" if np.isnan(a).any() else "Inf"
                    raise BadCalibrationData(
                        f"pass '{self.pass_name}': calibration input %{name} has {bad} in batch "
                        f"{b} ({int((~np.isfinite(a)).sum())} of {a.size} values); remove or "
                        "fix those samples")
        return list(batches)

    def run_batches(self, graph: Graph, batches: Sequence[tuple], desc: str = "") -> Iterator[list]:
        """``graph``'s outputs for each batch, with one compiled executor for all of them
        (a progress bar on stderr when there are many batches)."""
        fn = self.compiled(graph, jit=True)
        items: Any = batches
        if self.progress and len(batches) >= PROGRESS_MIN_BATCHES:
            try:
                from tqdm.auto import tqdm
                items = tqdm(batches, desc=desc or f"{self.pass_name}: calibrating",
                             unit="batch", leave=False, disable=None)  # None: only on a tty
            except ImportError:  # the bar is a nicety, not a dependency
                pass
        for batch in items:
            yield [np.asarray(o) for o in fn(*batch)]
