"""Bisect a pipeline: which pass made the outputs drift from the source model, and where.

(The module is not called ``bisect.py``: the repository root is the package, and a root
``bisect.py`` would shadow the standard library's ``bisect`` whenever Python runs from here.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import jax
import numpy as np

from . import codegen
from .ir import Graph, Node, Value
from .errors import UsageFailure
from .passes import PassContext, format_pipeline, parse_pipeline, run_pipeline

__all__ = ["BisectResult", "NodeDivergence", "StepError", "bisect", "compare_outputs"]

SQNR_THRESHOLD_DB = 20.0
"""Default bar for the quantization debugger: a layer below it is named (int8 layers of a
healthy model sit at 30-40 dB; under 20 dB the layer's own error is about 10% of its signal)."""


@dataclass
class StepError:
    """The model's output error against the source model after one pipeline step."""

    index: int  # 0 = the source graph as imported
    name: str
    options: dict
    max_abs: float
    rel_l2: float
    sqnr_db: float
    top1: float | None  # agreement of argmax(last dim) with the reference (classifiers)
    accuracy: float | None = None  # against labels, when given
    nodes: int = 0

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "options": self.options,
                "max_abs": self.max_abs, "rel_l2": self.rel_l2, "sqnr_db": self.sqnr_db,
                "top1": self.top1, "accuracy": self.accuracy, "nodes": self.nodes}


@dataclass
class NodeDivergence:
    """How far one value drifted across the worst pass (same name before and after it)."""

    value: str
    op: str
    loc: str
    rel_l2: float
    max_abs: float
    local: float  # rel L2 of the node run after the pass on the values it got before it

    def as_dict(self) -> dict:
        return {"value": self.value, "op": self.op, "loc": self.loc, "rel_l2": self.rel_l2,
                "max_abs": self.max_abs, "local": self.local}


@dataclass
class BisectResult:
    """Per-step output errors, the pass that added the most error and the nodes it hit."""

    pipeline: str
    reference: str  # what the errors are measured against
    tolerance: float
    steps: list[StepError]
    worst: int | None = None  # index into steps of the worst pass (None: no pass added error)
    nodes: list[NodeDivergence] = field(default_factory=list)
    params: list[tuple[str, float]] = field(default_factory=list)  # params the worst pass changed
    # When the reference itself is NaN/inf no pass can be blamed: what was non-finite, where.
    nonfinite: list[str] = field(default_factory=list)
    # The quantization debugger (a pipeline with quantize): one row per quantized node, worst
    # SQNR first (passes/quant_debug.quant_report), and the bar the first bad layer is named by.
    quant: list[dict] = field(default_factory=list)
    quant_order: list[str] = field(default_factory=list)  # quantized nodes in graph order
    sqnr_threshold: float = SQNR_THRESHOLD_DB

    def first_below(self, threshold: float | None = None) -> dict | None:
        """The first quantized node, in graph order, whose SQNR is below ``threshold`` dB
        (default: the result's ``sqnr_threshold``); None when every node meets it."""
        bar = self.sqnr_threshold if threshold is None else threshold
        rank = {n: i for i, n in enumerate(self.quant_order)}
        below = [r for r in self.quant if r["sqnr_db"] < bar]
        return min(below, key=lambda r: rank.get(r["node"], len(rank)), default=None)

    @property
    def worst_pass(self) -> str | None:
        """Name of the pass that added the most relative L2 error."""
        return None if self.worst is None else self.steps[self.worst].name

    def as_dict(self) -> dict:
        return {"pipeline": self.pipeline, "reference": self.reference, "tolerance": self.tolerance,
                "steps": [s.as_dict() for s in self.steps], "worst": self.worst,
                "worst_pass": self.worst_pass, "nodes": [n.as_dict() for n in self.nodes],
                "params": [{"name": n, "rel_l2": e} for n, e in self.params],
                "nonfinite": list(self.nonfinite), "quant": [dict(r) for r in self.quant],
                "sqnr_threshold": self.sqnr_threshold, "quant_first_below": self.first_below()}

    def quant_text(self) -> list[str]:
        """The quantization debugger's lines: per quantized node, worst first, and the first
        node (in graph order) under the SQNR bar."""
        if not self.quant:
            return []
        rows = []
        for r in self.quant:
            ws = r.get("weight_scale")
            rows.append([r["node"], r["op"], _db(r["sqnr_db"]),
                         "-" if ws is None else f"{ws[0]:.3g}..{ws[1]:.3g}",
                         _zp(r.get("weight_zero_point")), _frac(r.get("weight_clipped")),
                         _num(r.get("input_scale")), _zp(r.get("input_zero_point")),
                         _frac(r.get("input_clipped")), _num(r.get("output_scale")),
                         _zp(r.get("output_zero_point")), _frac(r.get("output_clipped"))
                         + ("  (kept float)" if r.get("quantized") is False else "")])
        lines = ["", "quantized nodes, worst SQNR first (float vs fake-quant outputs on the "
                     "calibration data):",
                 *_table(["node", "op", "SQNR dB", "w scale", "w zp", "w clip", "in scale",
                          "in zp", "in clip", "out scale", "out zp", "out clip"], rows)]
        bad = self.first_below()
        if bad is None:
            lines.append(f"every quantized node is at or above {self.sqnr_threshold:g} dB")
        else:
            lines.append(f"first node below {self.sqnr_threshold:g} dB (graph order): "
                         f"{bad['node']} ({bad['op']}, weight @{bad.get('weight')}) at "
                         f"{_db(bad['sqnr_db'])} dB")
        return lines

    def __str__(self) -> str:
        return "\n".join([self._steps_text(), *self.quant_text()])

    def _steps_text(self) -> str:
        has_acc = any(s.accuracy is not None for s in self.steps)
        head = ["#", "pass", "nodes", "max abs", "rel L2", "SQNR dB", "top-1"] + (["acc"] if has_acc else [])
        rows = []
        for s in self.steps:
            mark = " <- worst" if self.worst == s.index else ""
            row = [str(s.index), s.name + mark, str(s.nodes), _g(s.max_abs), _g(s.rel_l2),
                   _db(s.sqnr_db), _pct(s.top1)]
            rows.append(row + ([_pct(s.accuracy)] if has_acc else []))
        lines = [f"bisect: {self.pipeline or '(empty pipeline)'}  (errors vs {self.reference})",
                 *_table(head, rows)]
        if self.nonfinite:
            lines.append("")
            lines.append("the source model's outputs are already not finite on this data, so "
                         "errors against them say nothing about the passes:")
            lines += [f"  {what}" for what in self.nonfinite]
            return "\n".join(lines)
        if self.worst is None:
            lines.append(f"no pass added more than {self.tolerance:g} relative L2 error")
            return "\n".join(lines)
        lines.append("")
        lines.append(f"worst pass: {self.worst_pass} (step {self.worst}); values that diverge most "
                     "across it (local = its error when fed the inputs it had before the pass):")
        if self.nodes:
            lines += _table(["value", "op", "local", "rel L2", "max abs", "loc"],
                            [[f"%{n.value}", n.op, _g(n.local), _g(n.rel_l2), _g(n.max_abs),
                              n.loc] for n in self.nodes])
        else:
            lines.append("  (no value exists under the same name before and after it)")
        if self.params:
            lines.append("params it changed: " + ", ".join(f"@{n} (rel L2 {_g(e)})"
                                                         for n, e in self.params))
        return "\n".join(lines)


def _g(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def _db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f}"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _zp(x) -> str:
    return "-" if x is None else str(x)


def _frac(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


# --- metrics ----------------------------------------------------------------------------
def _f64(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype != np.float64 else a


def _rel_l2(ref: np.ndarray, out: np.ndarray) -> float:
    err = float(np.sqrt(np.sum((out - ref) ** 2)))
    norm = float(np.sqrt(np.sum(ref ** 2)))
    if err == 0.0:
        return 0.0
    return err / norm if norm > 0 else math.inf


def compare_outputs(reference: Sequence, outputs: Sequence, labels=None) -> dict:
    """max abs, relative L2, SQNR (dB) and top-1 agreement of ``outputs`` vs ``reference``."""
    if len(reference) != len(outputs) or any(np.shape(r) != np.shape(o)
                                             for r, o in zip(reference, outputs)):
        return {"max_abs": math.inf, "rel_l2": math.inf, "sqnr_db": -math.inf, "top1": None,
                "accuracy": None}
    refs = [_f64(r) for r in reference]
    outs = [_f64(o) for o in outputs]
    sig = sum(float(np.sum(r ** 2)) for r in refs)
    noise = sum(float(np.sum((o - r) ** 2)) for r, o in zip(refs, outs))
    max_abs = max((float(np.max(np.abs(o - r))) if r.size else 0.0 for r, o in zip(refs, outs)),
                  default=0.0)
    if math.isnan(noise):
        max_abs = rel = math.inf
        sqnr = -math.inf
    else:
        rel = 0.0 if noise == 0 else (math.sqrt(noise / sig) if sig > 0 else math.inf)
        sqnr = math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf)
    agree, accuracy = [], None
    for r, o in zip(refs, outs):
        if r.ndim >= 2 and r.shape[-1] > 1:
            agree.append(float(np.mean(np.argmax(r, -1) == np.argmax(o, -1))))
            if labels is not None and accuracy is None and np.shape(labels) == r.shape[:-1]:
                accuracy = float(np.mean(np.argmax(o, -1) == np.asarray(labels)))
    top1 = float(np.mean(agree)) if agree else None
    return {"max_abs": max_abs, "rel_l2": rel, "sqnr_db": sqnr, "top1": top1, "accuracy": accuracy}


# --- the bisection ----------------------------------------------------------------------
def _with_outputs(graph: Graph, names: list[str]) -> Graph:
    """The same graph returning the named intermediate values (a pure IR edit)."""
    by_name = {o.name: o for n in graph.nodes for o in n.outputs}
    return graph.replace(outputs=tuple(by_name[n] for n in names))


def _local_graph(after: Graph, common: set[str]) -> tuple[Graph, list[str], list[str]]:
    """Each compared node of ``after`` on its own, its activation inputs made graph inputs.

    Returns the graph, the names whose values feed its extra inputs (in order) and the names
    of the values its outputs stand for.
    """
    namer = after.namer("local")
    keep = {v.name for v in after.inputs}
    extra, feeds, nodes, outs, stands_for = [], [], [], [], []
    for n in after.nodes:
        if not any(o.name in common for o in n.outputs):
            continue
        ins = []
        for v in n.inputs:
            if v.name in keep or after.is_param(v):
                ins.append(v)
                continue
            fresh = Value(namer(), v.type)
            extra.append(fresh)
            feeds.append(v.name)
            ins.append(fresh)
        new_outs = tuple(Value(namer(), o.type) for o in n.outputs)
        nodes.append(Node(n.op, tuple(ins), new_outs, n.attrs, n.regions, n.loc))
        for o, new in zip(n.outputs, new_outs):
            if o.name in common:
                outs.append(new)
                stands_for.append(o.name)
    graph = Graph("local", tuple(after.inputs) + tuple(extra), tuple(outs), tuple(nodes), after.params,
                  after.requires)
    return graph, feeds, stands_for


def _rank_nodes(before: Graph, after: Graph, inputs: Sequence, top: int) -> list[NodeDivergence]:
    """Values present (same name and type) before and after a pass, ranked by divergence.

    ``rel_l2`` is how far a value drifted in the whole model; ``local`` is the error of its
    node alone, run after the pass on the inputs it had before. A node the pass broke has a
    large local error; its downstream users drift too but have a local error near zero.
    """
    types_before = {o.name: o.type for n in before.nodes for o in n.outputs}
    all_after = [o.name for n in after.nodes for o in n.outputs]
    common = [name for name, t in ((o.name, o.type) for n in after.nodes for o in n.outputs)
              if types_before.get(name) == t]
    if not common:
        return []
    vals_b = dict(zip(common, codegen.executor(_with_outputs(before, common))(*inputs)))
    vals_a = dict(zip(all_after, codegen.executor(_with_outputs(after, all_after))(*inputs)))
    local_g, feeds, stands_for = _local_graph(after, set(common))
    fed = [vals_b[f] if f in vals_b else vals_a[f] for f in feeds]
    vals_l = dict(zip(stands_for, codegen.executor(local_g)(*inputs, *fed)))
    ranked = []
    for n in after.nodes:
        for o in n.outputs:
            if o.name not in vals_b:
                continue
            b, a = _f64(vals_b[o.name]), _f64(vals_a[o.name])
            rel = _rel_l2(b, a)
            local = _rel_l2(b, _f64(vals_l[o.name]))
            mx = float(np.max(np.abs(a - b))) if b.size else 0.0
            rel, local = (math.inf if math.isnan(x) else x for x in (rel, local))
            if rel > 0 or local > 0:
                ranked.append(NodeDivergence(o.name, n.op, n.loc, rel, mx, local))
    ranked.sort(key=lambda d: (-d.local, -d.rel_l2))
    return ranked[:top]


def _changed_params(before: Graph, after: Graph) -> list[tuple[str, float]]:
    out = []
    for name, arr in after.params.items():
        old = before.params.get(name)
        if old is None or getattr(arr, "abstract", False) or getattr(old, "abstract", False):
            continue
        if old.shape == arr.shape and not np.array_equal(old, arr):
            out.append((name, _rel_l2(_f64(old), _f64(arr))))
    return sorted(out, key=lambda t: -t[1])


class BisectUsageError(UsageFailure, ValueError):
    """bisect() was given data that does not fit the model."""


def _check_shapes(source: Graph, inputs: list) -> None:
    for v, x in zip(source.inputs, inputs):
        want = tuple(v.type.shape)
        if len(want) != x.ndim or any(isinstance(d, int) and d != n for d, n in zip(want, x.shape)):
            raise BisectUsageError(
                f"bisect: input %{v.name} is {v.type}; the data for it has shape {x.shape}"
                " (pass batch_dim=True so any batch size fits, or data of the example's shape)")


def _nonfinite(source: Graph, outputs: Sequence, who: str) -> list[str]:
    """One line per output of ``who`` holding NaN or inf, naming the output; [] when finite."""
    lines = []
    for i, o in enumerate(outputs):
        a = np.asarray(o)
        if a.dtype.kind not in "fc":
            continue
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        if nan or inf:
            name = f"%{source.outputs[i].name}" if i < len(source.outputs) else f"#{i}"
            lines.append(f"{who}: output {i} ({name}) has {nan} NaN and {inf} inf of {a.size} values")
    return lines


def _attach_quant(result: BisectResult, history) -> None:
    """The last quantize step's debugger table (and its nodes' graph order) into ``result``."""
    rec = next((r for r in reversed(history) if r.name == "quantize"), None)
    if rec is None:
        return
    result.quant = list(rec.data.get("quant_report", []))
    result.quant_order = [f"%{n.name}" for n in rec.graph.nodes]


def bisect(model, *example_args, params=None, passes="default", data: Sequence | None = None,
           labels=None, top: int = 10, batch_dim=None, calibration=None,
           pass_data: dict | None = None, tolerance: float = 1e-6,
           sqnr_threshold: float = SQNR_THRESHOLD_DB) -> BisectResult:
    """Run ``passes`` step by step on ``data`` and report each step's error vs the source model.

    ``data``: a list of input arrays (one per model input, flat order); defaults to the
    example arguments. The reference is the original JAX function when ``model`` is one,
    otherwise the imported source graph. A pass is named worst only if it adds more than
    ``tolerance`` relative L2 error (float32 reassociation noise is ~1e-7). Values of the
    worst pass are ranked by how much divergence they *introduce*, so the node a pass broke
    comes before its downstream users.

    With a ``quantize`` step (give ``calibration``), the result also carries the quantization
    debugger: per quantized node SQNR, scales, zero points and clipped fractions, worst first
    (``result.quant``), and the first node in graph order below ``sqnr_threshold`` dB
    (``result.first_below()``).
    """
    from .api import _flat_calibration, import_model
    steps = parse_pipeline(passes)
    from .frontends.torch import is_torch_model
    is_jax = callable(model) and not isinstance(model, Graph) \
        and not isinstance(model, (str, bytes)) and not is_torch_model(model)
    flat_ex, ex_tree = jax.tree_util.tree_flatten(example_args)
    if (is_jax and data is not None and batch_dim is None and len(data) == len(flat_ex)
            and any(np.shape(d) != np.shape(e) for d, e in zip(data, flat_ex))):
        # Trace at the data's shapes: the example inputs only say what the model takes.
        example_args = jax.tree_util.tree_unflatten(ex_tree, [np.asarray(d) for d in data])
    source, in_tree, _, _ = import_model(model, *example_args, params=params, batch_dim=batch_dim)
    inputs = list(data) if data is not None else jax.tree_util.tree_leaves(example_args)
    if len(inputs) != len(source.inputs):
        raise BisectUsageError(f"bisect: the model takes {len(source.inputs)} inputs "
                               f"({', '.join('%' + v.name for v in source.inputs)}); data has "
                               f"{len(inputs)}")
    inputs = [np.asarray(x) for x in inputs]
    _check_shapes(source, inputs)
    source_out = codegen.executor(source)(*inputs)
    if is_jax:
        args = jax.tree_util.tree_unflatten(in_tree, inputs)
        raw = model(params, *args) if params is not None else model(*args)
        reference = [np.asarray(r) for r in jax.tree_util.tree_leaves(raw)]
        ref_name = f"the JAX function {getattr(model, '__name__', 'model')}"
    else:
        reference, ref_name = source_out, "the source graph"
    nonfinite = (_nonfinite(source, reference, ref_name)
                 or (_nonfinite(source, source_out, "the source graph as imported") if is_jax else []))
    ctx = PassContext(executor=codegen.executor, calibration=_flat_calibration(calibration, in_tree),
                      data=dict(pass_data or {}))
    _, history = run_pipeline(source, steps, ctx) if steps else (source, [])

    results = [StepError(0, "source", {}, nodes=len(source.nodes),
                         **compare_outputs(reference, source_out, labels))]
    for rec in history:
        outs = codegen.executor(rec.graph)(*inputs)
        results.append(StepError(rec.index, rec.name, dict(rec.options), nodes=len(rec.graph.nodes),
                                 **compare_outputs(reference, outs, labels)))
    result = BisectResult(format_pipeline(steps), ref_name, tolerance, results, nonfinite=nonfinite,
                          sqnr_threshold=sqnr_threshold)
    _attach_quant(result, history)
    if nonfinite:
        return result
    deltas = [(results[i].rel_l2 - results[i - 1].rel_l2
               if not math.isinf(results[i].rel_l2) else math.inf, i)
              for i in range(1, len(results))]
    best = max(deltas, key=lambda t: (t[0], -t[1]), default=(0.0, None))  # first of equals
    if best[0] > tolerance:
        worst = best[1]
        result.worst = worst
        before = source if worst == 1 else history[worst - 2].graph
        after = history[worst - 1].graph
        result.nodes = _rank_nodes(before, after, inputs, top)
        result.params = _changed_params(before, after)
    return result
