"""prune-sensitivity: how much each prunable group (or weight) moves the output as it is pruned,
and the per-layer sparsities ``prune{sparsity=auto{budget=B}}`` picks from that.

The model runs on the calibration inputs (or, without them, one random batch when the input
shapes are static). Each measurement zeroes the candidate's least important units (a pruned
channel whose weights are zero gives exactly the structurally pruned output) and compares
with the dense outputs: relative L2 error, or with ``data={"labels": ...}`` the drop in top-1
accuracy (in points). All weights become inputs of one compiled program, so the many
measurements cost one compile.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, TensorType, Value
from ..ir.types import numpy_dtype
from .context import MissingPassData, PassContext
from .registry import Option, PassOptionError, register_pass

__all__ = ["measure", "allocate", "prune_sensitivity", "DEFAULT_LEVELS"]

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


SYMBOL_SIZE = 8
"""The size a symbolic input dim (a batch) takes in the random batch used without calibration."""


def random_inputs(graph: Graph) -> tuple | None:
    """One random batch for ``graph``'s inputs, symbols bound to ``SYMBOL_SIZE`` (None when a
    requirement of the model rules that size out)."""
    from ..ir.dims import dim_symbols, eval_dim
    env = {sym: SYMBOL_SIZE for v in graph.inputs for d in v.type.shape for sym in dim_symbols(d)}
    if any(r.holds(env) is False for r in graph.requires):
        return None
    rng = np.random.default_rng(0)
    args = []
    for v in graph.inputs:
        shape = tuple(eval_dim(d, env) for d in v.type.shape)
        dt = numpy_dtype(v.type.dtype)
        args.append(rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                    else np.zeros(shape, dt))
    return tuple(args)


def _batches(graph: Graph, ctx: PassContext) -> list[tuple]:
    if ctx.calibration:
        return [tuple(b) for b in ctx.calibration]
    args = random_inputs(graph)
    if args is None:
        raise MissingPassData(f"pass '{ctx.pass_name}' needs calibration inputs: the model's "
                              "symbolic dims need sizes; pass compile(..., calibration=...)")
    return [args]


def _runner(ctx: PassContext, graph: Graph):
    """``run(params, inputs) -> outputs`` compiled once, the float weights passed as inputs."""
    if ctx.executor is None:
        raise MissingPassData(f"pass '{ctx.pass_name}' needs to run the model but no executor "
                              "was provided")
    names = [k for k, a in graph.params.items() if not getattr(a, "abstract", False)
             and np.issubdtype(np.asarray(a).dtype, np.floating) and np.ndim(a) > 0]
    g = graph.replace(inputs=graph.inputs + tuple(Value(k, TensorType.of(graph.params[k]))
                                                  for k in names),
                      params={k: v for k, v in graph.params.items() if k not in names},
                      annotations=())
    fn = ctx.executor(g, jit=True)
    return lambda params, inputs: [np.asarray(o) for o in fn(*inputs, *[params[k] for k in names])]


def _metric(outs: list, base: list, labels) -> float:
    if labels is not None:
        acc = lambda o: float(np.mean(np.argmax(o, -1) == labels))  # noqa: E731
        return 100.0 * (acc(base[0]) - acc(outs[0]))
    num = sum(float(np.sum((np.asarray(o, np.float64) - b) ** 2)) for o, b in zip(outs, base))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in base)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def measure(graph: Graph, ctx: PassContext, pattern: str = "channel", levels=DEFAULT_LEVELS,
            criterion: str = "l1", include=(), exclude=()) -> list[dict]:
    """Per candidate (group, or weight for unstructured): its error at each sparsity level."""
    from .prune import _label, _selected, candidates, magnitude_masks
    from .prune_groups import weight_params, zero_units
    batches = _batches(graph, ctx)
    labels = ctx.data.get("labels")
    labels = None if labels is None else [np.asarray(labels)] if len(batches) == 1 else \
        [np.asarray(x) for x in labels]
    run = _runner(ctx, graph)
    base = [run(graph.params, b) for b in batches]

    def error(params) -> float:
        errs = [_metric(run(params, b), ref, None if labels is None else labels[i])
                for i, (b, ref) in enumerate(zip(batches, base))]
        return float(np.mean(errs))

    rows = []
    if pattern in ("channel", "head"):
        an, plan = candidates(graph, ctx, pattern, criterion, include, exclude, quiet=True)
        for gid, (good, imp) in plan.items():
            g = an.groups[gid]
            order = np.argsort(np.asarray(imp), kind="stable")
            n = len(g.units)
            errs = []
            for s in levels:
                r = min(int(math.floor(s * n + 1e-9)), len(good), n - 1)
                masked = zero_units(graph, an, [good[i] for i in order[:r]])
                errs.append(error(dict(masked.params)))
            rows.append({"key": gid, "label": _label(g, an), "size": n, "levels": tuple(levels),
                         "errors": tuple(errs)})
    else:
        for name in sorted(weight_params(graph)):
            if not _selected(name, include, exclude):
                continue
            errs = []
            for s in levels:
                keep = magnitude_masks(graph, [name], s, "unstructured", "layer")[name]
                arr = np.asarray(graph.params[name])
                errs.append(error({**graph.params, name: np.where(keep, arr, 0).astype(arr.dtype)}))
            rows.append({"key": name, "label": f"@{name}", "size": int(graph.params[name].size),
                         "levels": tuple(levels), "errors": tuple(errs)})
    return rows


def allocate(rows: list[dict], budget: float) -> dict:
    """Per-candidate sparsities removing ``budget`` of all units (weights) at least error.

    Greedy: the next level step with the least error added per unit removed, until the budget.
    """
    choice = {i: -1 for i in range(len(rows))}
    total = sum(r["size"] for r in rows)
    removed = 0.0
    while removed < budget * total - 1e-9:
        best = None
        for i, r in enumerate(rows):
            c = choice[i]
            if c + 1 >= len(r["levels"]):
                continue
            s0, e0 = (0.0, 0.0) if c < 0 else (r["levels"][c], r["errors"][c])
            step = (r["levels"][c + 1] - s0) * r["size"]
            cost = max(r["errors"][c + 1] - e0, 0.0) / max(step, 1e-12)
            if best is None or cost < best[0]:
                best = (cost, i, step)
        if best is None:
            break
        choice[best[1]] += 1
        removed += best[2]
    return {r["key"]: (r["levels"][choice[i]] if choice[i] >= 0 else 0.0)
            for i, r in enumerate(rows)}


def _check_levels(v) -> None:
    if not v or any(not 0.0 < s < 1.0 for s in v) or list(v) != sorted(set(v)):
        raise PassOptionError("pass 'prune-sensitivity' option 'sparsities': give increasing "
                              f"fractions in (0, 1), got {list(v)}")


@register_pass("prune-sensitivity", options=[
    Option("pattern", str, "channel", "what to prune: channel | head | unstructured",
           choices=("channel", "head", "unstructured")),
    Option("sparsities", list, (0.25, 0.5, 0.75), "the sparsity levels to measure", item=float,
           check=_check_levels),
    Option("criterion", str, "l1", "importance of a channel group", choices=("l1", "l2", "activation", "obs")),
    Option("include", list, (), "globs over param names to measure"),
    Option("exclude", list, (), "globs over param names to leave out"),
])
def prune_sensitivity(graph: Graph, ctx: PassContext, pattern="channel", sparsities=(0.25, 0.5, 0.75),
                      criterion="l1", include=(), exclude=()) -> Graph:
    """Measure each prunable group's effect on the output at several sparsities (no change)."""
    rows = measure(graph, ctx, pattern, tuple(sparsities), criterion, include, exclude)
    what = "accuracy drop (points)" if ctx.data.get("labels") is not None else "relative error"
    for r in rows:
        figures = ", ".join(f"{100 * s:.0f}%: {e:.3g}" for s, e in zip(r["levels"], r["errors"]))
        ctx.remark("note", f"{r['label']} ({r['size']} {'weights' if pattern == 'unstructured' else pattern + 's'}) "
                           f"{what} at {figures}", candidate=str(r["key"]), size=r["size"],
                   levels=r["levels"], errors=r["errors"], metric=what, layer=r["label"],
                   # one number per level: the report draws them as a bar chart per layer
                   **{f"at {100 * s:.0f}%": e for s, e in zip(r["levels"], r["errors"])})
    if not rows:
        ctx.remark("missed", f"nothing to measure: no {pattern} candidate is free to prune")
    return graph
