"""The pass manager: runs a pipeline, verifies between passes, records what each pass did."""
from __future__ import annotations

import contextlib
import difflib
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..ir import Graph, graph_stats, verify
from ..ir.stats import GraphStats
from ..ir.verify import VerificationError
from .context import PassContext, Remarks
from .pipeline import Step, parse_pipeline
from .registry import get_pass
from ..errors import PassFailure


@dataclass
class PassRecord:
    """What one pass did: options, time, counts before/after, IR before/after, remarks."""

    index: int
    name: str
    options: dict
    seconds: float
    verify_seconds: float
    before: GraphStats
    after: GraphStats
    ir_before: str
    ir_after: str
    remarks: Remarks = field(default_factory=Remarks)  # print(rec.remarks): one line each
    graph: Graph | None = field(default=None, repr=False)  # the graph after this pass
    data: dict = field(default_factory=dict)  # what the pass reported for machines (tables)

    @property
    def changed(self) -> bool:
        return self.ir_before != self.ir_after

    def diff(self, context: int = 3) -> str:
        """Unified diff of the IR text across this pass."""
        return "".join(difflib.unified_diff(
            self.ir_before.splitlines(keepends=True), self.ir_after.splitlines(keepends=True),
            fromfile=f"before {self.name}", tofile=f"after {self.name}", n=context))

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "options": self.options,
                "seconds": self.seconds, "verify_seconds": self.verify_seconds,
                "before": self.before.as_dict(), "after": self.after.as_dict(),
                "changed": self.changed, "remarks": [r.as_dict() for r in self.remarks]}


class PassError(PassFailure, RuntimeError):
    """A pass failed or left broken IR; names the pass."""


class History(list):
    """The records of a pipeline run, in order; look one up by pass name or index."""

    def __str__(self) -> str:
        """One line per pass: time, nodes before -> after, remark counts."""
        lines = []
        for r in self:
            kinds: dict[str, int] = {}
            for m in r.remarks:
                kinds[m.kind] = kinds.get(m.kind, 0) + 1
            notes = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no remarks"
            lines.append(f"{r.index:>2} {r.name:<16} {1e3 * r.seconds:9.2f} ms  "
                         f"{r.before.nodes} -> {r.after.nodes} nodes  {notes}")
        return "\n".join(lines) if lines else "(no passes ran)"

    def find(self, key) -> PassRecord:
        if isinstance(key, int):
            return self[key]
        matches = [r for r in self if r.name == key]
        if not matches:
            from ..ir.registry import did_you_mean
            names = [r.name for r in self]
            raise KeyError(f"no pass {key!r} in this pipeline{did_you_mean(key, names)}; "
                           f"ran: {', '.join(names) or 'nothing'}")
        return matches[0]


def no_progress(text: str):
    """The default progress hook: a context manager that reports nothing."""
    return contextlib.nullcontext()


def run_pipeline(graph: Graph, pipeline, ctx: PassContext | None = None, *, verify_ir: bool = True,
                 print_ir_after: Sequence[str] | bool = (), out=None,
                 progress=None) -> tuple[Graph, History]:
    """Run the pipeline on ``graph`` (never modified); returns the final graph and history.

    ``progress``: ``progress(text)`` returns a context manager wrapped around each pass (the
    CLI's progress lines).
    """
    steps: list[Step] = parse_pipeline(pipeline)  # all names and options checked up front
    ctx = ctx or PassContext()
    for s in steps:
        for need in get_pass(s.name).needs:
            ctx.pass_name = s.name
            ctx.require(need)
    out = out or sys.stdout
    history = History()
    from ..ir.dims import assuming
    with assuming(graph.requires):  # rewrites may rely on what the model requires
        return _run_steps(graph, steps, ctx, verify_ir, print_ir_after, out, history, progress)


def _run_steps(graph, steps, ctx, verify_ir, print_ir_after, out, history, progress):
    current = graph
    before_stats, before_text = graph_stats(current), current.to_text()
    for i, step in enumerate(steps, start=1):
        info = get_pass(step.name)
        ctx.pass_name = step.name
        n_remarks = len(ctx.remarks)
        ctx.pass_data = {}
        with (progress or no_progress)(f"pass {step.name} ({i}/{len(steps)})"):
            t0 = time.perf_counter()
            try:
                result = info.fn(current, ctx, **step.options)
            except (VerificationError, PassError):
                raise
            except Exception as e:
                raise PassError(f"pass '{step.name}' (step {i}) failed: {type(e).__name__}: {e}") \
                    from e
            finally:
                # a pass's cached executors (device copies of params) do not outlive it
                getattr(ctx, "release", lambda: None)()
            seconds = time.perf_counter() - t0
            if not isinstance(result, Graph):
                raise PassError(f"pass '{step.name}' returned {type(result).__name__}, not a Graph")
            t1 = time.perf_counter()
            if verify_ir:
                verify(result, context=f"after pass '{step.name}' (step {i})")
            vsec = time.perf_counter() - t1
        after_stats, after_text = graph_stats(result), result.to_text()
        rec = PassRecord(i, step.name, dict(step.options), seconds, vsec, before_stats, after_stats,
                         before_text, after_text, Remarks(ctx.remarks[n_remarks:]), result,
                         dict(ctx.pass_data))
        history.append(rec)
        if print_ir_after is True or step.name in (print_ir_after or ()):
            print(f"// ----- IR after {step.name} (step {i}) -----", file=out)
            print(after_text, file=out)
        current, before_stats, before_text = result, after_stats, after_text
    return current, history
