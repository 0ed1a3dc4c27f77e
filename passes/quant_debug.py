"""The quantization debugger: SQNR of quantized values against float, per-layer sensitivity,
and the mixed-precision choice of which layers stay in float to meet an output budget."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..ir import Graph, Value
from .context import PassContext


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise) in dB (inf when there is no noise)."""
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


def probe_sqnr(ctx: PassContext, graph: Graph, values: Sequence[Value], qgraph: Graph,
               qvalues: Sequence[Value], batches: Sequence[tuple]) -> list[float]:
    """SQNR (dB) of each ``qvalues[i]`` of ``qgraph`` against ``values[i]`` of ``graph``,
    accumulated over the batches (signal and noise power summed, never stored)."""
    f_fn = ctx.compiled(graph.replace(outputs=tuple(values)), jit=True)
    q_fn = ctx.compiled(qgraph.replace(outputs=tuple(qvalues)), jit=True)
    sig, noise = np.zeros(len(values)), np.zeros(len(values))
    for batch in batches:
        for i, (a, b) in enumerate(zip(f_fn(*batch), q_fn(*batch))):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            sig[i] += np.sum(a * a)
            noise[i] += np.sum((a - b) ** 2)
    return [sqnr_db(s, n) for s, n in zip(sig, noise)]


def _float_outputs(graph: Graph) -> list[int]:
    return [i for i, v in enumerate(graph.outputs) if v.dtype.startswith(("f", "bf"))]


class OutputReference:
    """The float model's outputs on the batches, run once and kept (float64) so that each
    quantized variant is scored with one run of its own, not a second run of the float model."""

    def __init__(self, ctx: PassContext, graph: Graph, batches: Sequence[tuple]):
        idx = _float_outputs(graph)
        fn = ctx.compiled(graph.replace(outputs=tuple(graph.outputs[i] for i in idx)), jit=True)
        self.ctx, self.idx, self.batches = ctx, idx, list(batches)
        self.outputs = [[np.asarray(a, np.float64) for a in fn(*b)] for b in self.batches]
        self.signal = float(sum(np.sum(a * a) for outs in self.outputs for a in outs))

    def sqnr(self, qgraph: Graph) -> float:
        """SQNR (dB) of ``qgraph``'s float outputs (the same positions) against the float model."""
        q_fn = self.ctx.compiled(qgraph.replace(outputs=tuple(qgraph.outputs[i]
                                                              for i in self.idx)), jit=True)
        noise = 0.0
        for batch, ref in zip(self.batches, self.outputs):
            for a, b in zip(ref, q_fn(*batch)):
                noise += float(np.sum((a - np.asarray(b, np.float64)) ** 2))
        return sqnr_db(self.signal, noise)


def output_sqnr(ctx: PassContext, graph: Graph, qgraph: Graph, batches,
                reference: OutputReference | None = None) -> float:
    """SQNR (dB) of all the model's float outputs together, quantized model against float
    (``reference``: the float outputs already computed on the same batches)."""
    return (reference or OutputReference(ctx, graph, batches)).sqnr(qgraph)


def choose_float_layers(layers: Sequence[str], alone_db: dict[str, float],
                        build: Callable[[frozenset], Graph], measure: Callable[[Graph], float],
                        budget_db: float, start_db: float) -> tuple[list[str], float, list]:
    """Layers kept in float, most sensitive first (lowest output SQNR when quantized alone),
    until the model's output SQNR meets ``budget_db``; returns (kept, its SQNR, the steps).

    Greedy on the measured sensitivities, each step measured on the model (not assumed
    additive); once the budget is met, each float layer but the last is tried quantized again.
    """
    kept: list[str] = []
    steps = [{"float_layers": [], "output_sqnr_db": round(start_db, 2)}]
    db = start_db
    for name in sorted(layers, key=lambda n: alone_db[n]):
        if db >= budget_db:
            break
        kept.append(name)
        db = measure(build(frozenset(kept)))
        steps.append({"float_layers": list(kept), "output_sqnr_db": round(db, 2)})
    if db >= budget_db:  # then quantize again what the budget can afford, least sensitive first
        for name in sorted(kept[:-1], key=lambda n: -alone_db[n]):
            trial = [k for k in kept if k != name]
            trial_db = measure(build(frozenset(trial)))
            steps.append({"float_layers": trial, "output_sqnr_db": round(trial_db, 2)})
            if trial_db >= budget_db:
                kept, db = trial, trial_db
    return kept, db, steps


def quant_report(source) -> list[dict]:
    """The quantization debugger's table (worst SQNR first) from a compiled model, a history
    or a pass record: one row per quantized node."""
    history = getattr(source, "history", source)
    records = [history] if hasattr(history, "data") else list(history or ())
    for rec in reversed(records):
        if getattr(rec, "name", "") == "quantize":
            return list(rec.data.get("quant_report", []))
    raise ValueError("no quantize pass in this history: compile with passes='...,quantize{...}'")


def format_report(rows: list[dict]) -> str:
    """The debugger's table as text, one line per quantized node, worst first."""
    alone = any("alone_output_sqnr_db" in r for r in rows)
    lines = [f"{'node':<10} {'op':<24} {'SQNR dB':>8} {'w scale max':>12} {'w clip':>7} "
             f"{'in scale':>10} {'in zp':>6} {'in clip':>8}"
             + (f" {'alone: out dB':>13}" if alone else "")]
    for r in rows:
        lines.append(f"{r['node']:<10} {r['op']:<24} {r['sqnr_db']:>8.2f} "
                     f"{r.get('weight_scale', (0, 0))[1]:>12.4g} {r.get('weight_clipped', 0):>7.2%} "
                     f"{r.get('input_scale', float('nan')):>10.4g} "
                     f"{str(r.get('input_zero_point', '-')):>6} {r.get('input_clipped', 0):>8.3%}"
                     + (f" {r.get('alone_output_sqnr_db', float('nan')):>13.2f}" if alone else "")
                     + ("  (kept float)" if r.get("quantized") is False else ""))
    return "\n".join(lines)
