"""The prune pass: unstructured and N:M sparsity, structured channel and head removal."""
from __future__ import annotations

import fnmatch
import math
import re
import time

import numpy as np

from ..ir import Graph, graph_stats
from .context import PassContext
from .prune_groups import Analysis, analyze, nonempty, remove_units, weight_axes, weight_params
from .registry import Option, PassOptionError, register_pass

__all__ = ["prune", "magnitude_masks", "interleaved_timer", "plan_structured", "record_masks"]

_NM = re.compile(r"^(\d+):(\d+)$")
_AUTO = re.compile(r"^auto\{budget=([0-9.eE+-]+)\}$")


def _sparsity(v) -> float | tuple[str, float]:
    """A fraction in [0, 1), or ("auto", budget) for ``auto{budget=B}``."""
    text = str(v).strip()
    m = _AUTO.match(text.replace(" ", ""))
    try:
        x = float(m.group(1) if m else text)
    except ValueError:
        x = -1.0
    if not 0.0 <= x < 1.0:
        raise PassOptionError(f"pass 'prune' option 'sparsity': {v!r} is not a fraction in [0, 1) "
                              "or auto{budget=B} with B in [0, 1)")
    return ("auto", x) if m else x


def _check_sparsity(v) -> None:
    _sparsity(v)


def _check_pattern(v: str) -> None:
    if v in ("unstructured", "channel", "head"):
        return
    m = _NM.match(v)
    if m is None or not 0 < int(m.group(1)) < int(m.group(2)):
        raise PassOptionError(f"pass 'prune' option 'pattern': {v!r} is not one of unstructured, "
                              "channel, head or N:M with 0 < N < M (e.g. 2:4)")


_RECONSTRUCT = {"true": "true", "1": "true", "false": "", "0": "", "": "", "sequential": "sequential"}


def _reconstruct_mode(v) -> str:
    """'' (off) | 'true' | 'sequential' from an option value (text or Python bool)."""
    return _RECONSTRUCT[str(v).lower()]


def _check_reconstruct(v) -> None:
    if str(v).lower() not in _RECONSTRUCT:
        raise PassOptionError(f"pass 'prune' option 'reconstruct': {v!r} is not one of "
                              "true, false, sequential")


def _selected(name: str, include, exclude) -> bool:
    """Whether the param ``name`` is picked by the include/exclude globs."""
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


# --- masks -----------------------------------------------------------------------------------
def record_masks(graph: Graph, masks: dict) -> Graph:
    """Attach each ``name -> (bool keep-mask, attrs)`` as a ``mask`` annotation on its param.

    A mask already on the param is combined (a weight pruned twice keeps only what both keep).
    """
    from ..ir.annotations import Annotation
    add = []
    for name, (mask, attrs) in masks.items():
        old = graph.annotation(name, "mask")
        if old is not None and old.array is not None and old.array.shape == mask.shape:
            mask = mask & np.asarray(old.array, bool)
        add.append(Annotation(name, "mask", dict(attrs), np.asarray(mask, bool)))
    return graph.with_annotations(add=add)


def _reduction_axis(graph: Graph, name: str) -> int | None:
    """The axis of weight ``name`` its consumer reduces over (dot contracting / conv input)."""
    for n in graph.walk():
        for t, a in weight_axes(n, graph.params, output=False):
            if t == name:
                return a
    return None


def magnitude_masks(graph: Graph, names, sparsity: float, pattern: str, scope: str) -> dict:
    """``name -> keep mask``: the smallest-magnitude weights dropped (per layer, globally, N:M)."""
    arrays = {k: np.abs(np.asarray(graph.params[k], np.float64)) for k in names}
    out = {}
    m = _NM.match(pattern)
    if m is not None:
        keep_n, group = int(m.group(1)), int(m.group(2))
        for k, mag in arrays.items():
            axis = _reduction_axis(graph, k)
            moved = np.moveaxis(mag, axis, -1)
            blocks = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
            # the N largest of each M consecutive weights along the reduction axis
            order = np.argsort(-blocks, axis=-1, kind="stable")
            keep = np.zeros(blocks.shape, bool)
            np.put_along_axis(keep, order[..., :keep_n], True, axis=-1)
            out[k] = np.moveaxis(keep.reshape(moved.shape), -1, axis)
        return out
    if scope == "global" and not isinstance(sparsity, dict):
        flat = np.concatenate([a.reshape(-1) for a in arrays.values()]) if arrays else np.zeros(0)
        drop = int(math.floor(sparsity * flat.size + 1e-9))
        order = np.argsort(flat, kind="stable")
        keep = np.ones(flat.size, bool)
        keep[order[:drop]] = False
        off = 0
        for k, a in arrays.items():
            out[k] = keep[off:off + a.size].reshape(a.shape)
            off += a.size
        return out
    for k, a in arrays.items():
        frac = sparsity.get(k, 0.0) if isinstance(sparsity, dict) else sparsity
        drop = int(math.floor(frac * a.size + 1e-9))
        keep = np.ones(a.size, bool)
        keep[np.argsort(a.reshape(-1), kind="stable")[:drop]] = False
        out[k] = keep.reshape(a.shape)
    return out


def _unstructured(graph: Graph, ctx: PassContext, sparsity, pattern, scope, include, exclude):
    weights = sorted(weight_params(graph))
    names = []
    for k in weights:
        arr = graph.params[k]
        if getattr(arr, "abstract", False) or not np.issubdtype(np.asarray(arr).dtype, np.floating):
            ctx.remark("missed", f"left @{k} alone: not a float weight", k)
            continue
        if not _selected(k, include, exclude):
            continue
        m = _NM.match(pattern)
        if m is not None:
            axis = _reduction_axis(graph, k)
            size = arr.shape[axis] if axis is not None else 0
            if axis is None or size % int(m.group(2)):
                ctx.remark("missed", f"left @{k} alone: its reduction axis ({size}) is not a "
                                     f"multiple of {m.group(2)}", k)
                continue
        names.append(k)
    if not names:
        ctx.remark("missed", "nothing to prune: no dot/conv weight matches include/exclude")
        return graph
    if isinstance(sparsity, dict):
        names = [k for k in names if sparsity.get(k, 0.0) > 0]
        if not names:
            return graph
    masks = magnitude_masks(graph, names, sparsity, pattern, scope)
    updates, annotated = {}, {}
    for k in names:
        arr = np.asarray(graph.params[k])
        keep = masks[k]
        updates[k] = np.where(keep, arr, np.zeros((), arr.dtype)).astype(arr.dtype)
        frac = 1.0 - keep.mean() if keep.size else 0.0
        annotated[k] = (keep, {"pattern": pattern, "sparsity": round(float(frac), 6)})
        ctx.remark("applied", f"@{k} {tuple(arr.shape)}: {100 * frac:.1f}% pruned ({pattern})", k,
                   param=k, sparsity=float(frac), pattern=pattern, elems=int(arr.size))
    return record_masks(graph.with_params(updates), annotated)


# --- structured ----------------------------------------------------------------------------
def _label(g, an: Analysis) -> str:
    names = sorted({t for t, _ in g.seeds}) or sorted({t for t, _ in g.axes if t in an.params})
    return ", ".join(f"@{t}" for t in names[:3]) + (" ..." if len(names) > 3 else "")


def _rounded_removal(n: int, want: int, k: int, avail: int) -> int:
    """How many of ``n`` units to remove so the kept count is a multiple of ``k`` (>= k)."""
    kept = n - min(want, avail)
    if k > 1:
        kept = max(k, int(round(kept / k)) * k)
        while n - kept > avail:
            kept += k
    kept = max(kept, 1)
    return max(0, n - kept)


def _eligible(an: Analysis, g, pattern, include, exclude, weights) -> tuple[list[int], str]:
    seeds = set(an.seeds)
    good, reason = [], ""
    for u in g.units:
        unit = an.units[u]
        why = unit.blocked
        if not why:
            producers = [t for t, a in unit.members if (t, a) in seeds]
            if not producers:
                why = "no layer produces it"
            elif not all(_selected(t, include, ()) for t in producers):
                why = "not included"
            else:
                bad = [t for t, _ in unit.members if t in weights and not _selected(t, (), exclude)]
                if bad:
                    why = f"coupled to an excluded layer @{bad[0]}"
        if why:
            reason = reason or why
        else:
            good.append(u)
    return good, reason


def _structured(graph: Graph, ctx: PassContext, sparsity, pattern, scope, criterion, include,
                exclude, round_to, reconstruct=False, damp=0.01, mask_input=""):
    an, remove = plan_structured(graph, ctx, sparsity, pattern, scope, criterion, include, exclude,
                                 round_to, damp, mask_input)
    if not remove:
        return graph
    if criterion == "obs" and not reconstruct:
        ctx.remark("note", "criterion=obs ranks units by the error left after re-fitting the "
                           "layers reading them; add reconstruct=true to re-fit them")
    if reconstruct:
        from .prune_data import collect, consumers
        from .prune_data import reconstruct as refit
        cons, stats = getattr(an, "data", None) or ([], None)
        gone = set(remove)
        if stats is None:
            cons = [c for c in consumers(graph, an) if gone & set(an.unit_of[(c.w, c.w_axis)].tolist())]
            if reconstruct == "sequential":  # its own statistics, one probe per consumer
                if not ctx.calibration:  # the error that says how to pass data
                    collect(graph, ctx, cons, "with reconstruct=sequential", mask_input)
            else:
                stats = collect(graph, ctx, cons, "with reconstruct=true", mask_input)
        if not cons:
            ctx.remark("note", "reconstruct: no linear layer (x @ W) reads a removed channel; "
                               "nothing to re-fit")
        if reconstruct == "sequential":
            from .prune_data import reconstruct_sequential
            graph = reconstruct_sequential(graph, ctx, an, cons, remove, damp, mask_input)
        else:
            graph = refit(graph, ctx, an, cons, stats, remove, damp)
    return remove_units(graph, an, remove)


def _data_importance(graph: Graph, ctx: PassContext, an: Analysis, plan: dict, remark,
                     criterion: str, damp: float, limit: float, mask_input: str = "") -> dict:
    """``plan`` re-scored from calibration statistics of the layers that read each unit:
    ``activation``, its contribution; ``obs``, the order of greedy removal with re-fitting."""
    from .prune_data import collect, consumers, contribution, obs_order
    units = [u for good, _ in plan.values() for u in good]
    wanted = set(units)
    cons = [c for c in consumers(graph, an) if wanted & set(an.unit_of[(c.w, c.w_axis)].tolist())]
    stats = collect(graph, ctx, cons, f"with criterion={criterion}", mask_input)
    an.data = (cons, stats)  # reused by reconstruct=true
    if criterion == "activation":
        score = contribution(graph, an, cons, stats, units)
    else:
        score = {}
        for good, _ in plan.values():
            n = int(np.ceil(limit * len(good)))
            got = obs_order(graph, an, cons, stats, good, damp, n)
            score.update(got if got is not None else dict.fromkeys(good))
    out = {}
    for gid, (good, imp) in plan.items():
        if any(score[u] is None for u in good):
            remark("note", f"{_label(an.groups[gid], an)}: no linear layer (x @ W) reads it; "
                           f"ranked by weight norm (l2) instead of {criterion}", group=str(gid))
            out[gid] = (good, [an.importance(an.units[u], "l2") for u in good])
        else:
            out[gid] = (good, [score[u] for u in good])
    return out


def candidates(graph: Graph, ctx: PassContext, pattern="channel", criterion="l1", include=(),
               exclude=(), quiet: bool = False, damp: float = 0.01, limit: float = 0.9,
               mask_input: str = "") -> tuple[Analysis, dict]:
    """The analysis and, per group free to shrink, its removable units and their importance."""
    an = analyze(graph)
    weights = weight_params(graph)
    plan: dict[int, tuple[list[int], list[float]]] = {}
    remark = (lambda *a, **k: None) if quiet else ctx.remark
    for g in an.groups:
        if not g.seeds:
            continue
        label = _label(g, an)
        if pattern == "head" and not g.heads:
            continue
        if pattern == "channel" and g.heads:
            remark("missed", f"left {label} alone: its channels are attention heads "
                             "(prune them with pattern=head)", group=str(g.id))
            continue
        good, reason = _eligible(an, g, pattern, include, exclude, weights)
        if reason == "not included" and not good:
            continue
        if not good:
            remark("missed", f"left {label} alone: {reason}", group=str(g.id))
            continue
        plan[g.id] = (good, [an.importance(an.units[u], criterion if criterion in ("l1", "l2")
                                           else "l2") for u in good])
    if criterion in ("activation", "obs") and plan:
        plan = _data_importance(graph, ctx, an, plan, remark, criterion, damp, limit, mask_input)
    return an, plan


def plan_structured(graph: Graph, ctx: PassContext, sparsity=0.5, pattern="channel", scope="layer",
                    criterion="l1", include=(), exclude=(), round_to=1,
                    damp: float = 0.01, mask_input: str = "") -> tuple[Analysis, list[int]]:
    """The analysis and the units ``prune{pattern=channel|head}`` removes (remarks into ctx).

    ``sparsity`` is a fraction, or a dict group id -> fraction (``sparsity=auto``).
    """
    most = max(sparsity.values(), default=0.0) if isinstance(sparsity, dict) else sparsity
    # criterion=obs orders removals greedily, far enough for this sparsity (units beyond still
    # rank after every removed one)
    limit = 0.9 if scope == "global" else min(1.0, most + 0.1)
    an, plan = candidates(graph, ctx, pattern, criterion, include, exclude, damp=damp, limit=limit,
                          mask_input=mask_input)
    if not plan:
        ctx.remark("missed", f"nothing to prune: no {pattern} group is free to shrink")
        return an, []
    remove: list[int] = []
    want: dict[int, int] = {}
    if scope == "global" and not isinstance(sparsity, dict):
        scored = []
        for gid, (good, imp) in plan.items():
            mean = float(np.mean(imp)) or 1.0
            scored += [(i / mean, gid, u) for u, i in zip(good, imp)]
        total = sum(len(an.groups[gid].units) for gid in plan)
        scored.sort()
        for _, gid, _ in scored[:int(math.floor(sparsity * total + 1e-9))]:
            want[gid] = want.get(gid, 0) + 1
    else:
        frac = sparsity if isinstance(sparsity, dict) else dict.fromkeys(plan, sparsity)
        want = {gid: int(math.floor(frac.get(gid, 0.0) * len(an.groups[gid].units) + 1e-9))
                for gid in plan}
    for gid, (good, imp) in plan.items():
        g = an.groups[gid]
        n = len(g.units)
        r = _rounded_removal(n, want.get(gid, 0), round_to, len(good))
        label = _label(g, an)
        if r == 0:
            if want.get(gid, 0) > 0:
                ctx.remark("missed", f"left {label} alone: removing {want[gid]} of {n} "
                                     f"{'heads' if g.heads else 'channels'} would leave a count "
                                     f"that is not a multiple of round_to={round_to}", group=str(gid))
            continue
        order = np.argsort(np.asarray(imp), kind="stable")
        gone = [good[i] for i in order[:r]]
        remove += gone
        what = "heads" if g.heads else "channels"
        idx = sorted(gone_idx(g, gone))
        shown = ", ".join(map(str, idx[:12])) + (", ..." if len(idx) > 12 else "")
        ctx.remark("applied", f"{label}: {n} -> {n - r} {what} (removed {shown})",
                   group=str(gid), before=n, after=n - r, unit=what, layer=label,
                   members=",".join(sorted({f"{t}:{a}" for t, a in g.axes if t in an.params})))
    if not remove:
        return an, []
    imp = {u: i for good, imps in plan.values() for u, i in zip(good, imps)}
    kept = nonempty(an, remove, imp)
    if len(kept) < len(remove):
        ctx.remark("note", f"kept {len(remove) - len(kept)} unit(s) that were the last of an axis "
                           "(a concat or split piece would have become empty)")
    return an, kept


def gone_idx(g, gone) -> list[int]:
    """Positions within the group (0..n-1) of the removed units, for remarks."""
    pos = {u: i for i, u in enumerate(g.units)}
    return [pos[u] for u in gone]


# --- speed check -----------------------------------------------------------------------------
def _inputs_for(graph: Graph, ctx: PassContext):
    if ctx.calibration:
        return tuple(ctx.calibration[0])
    from .prune_sensitivity import random_inputs
    return random_inputs(graph)


def interleaved_timer(ctx: PassContext, dense: Graph, pruned: Graph, inputs, budget_s: float = 2.0,
                      min_rounds: int = 10, max_rounds: int = 200) -> tuple[float, float, float]:
    """Seconds per call of the two graphs, compiled, timed in alternation on this host:
    (median dense, median pruned, median of the paired dense/pruned ratios).

    The paired ratio is what the speed check decides on: a load spike on a shared host slows
    both calls of a pair, so it moves the ratio less than either median.
    """
    fa = ctx.executor(dense, jit=True)
    fb = ctx.executor(pruned, jit=True)
    fa(*inputs), fb(*inputs)  # compile and warm up
    ta, tb = [], []
    start = time.perf_counter()
    for i in range(max_rounds):
        for fn, acc in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t0 = time.perf_counter()
            fn(*inputs)
            acc.append(time.perf_counter() - t0)
        if i + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    ratios = [a / b for a, b in zip(ta, tb) if b > 0]
    return float(np.median(ta)), float(np.median(tb)), float(np.median(ratios))


def _speed_checked(ctx: PassContext, dense: Graph, pruned: Graph, min_speedup: float) -> Graph:
    timer = ctx.data.get("prune_timer")
    if timer is None:
        if ctx.executor is None:
            ctx.remark("note", "min_speedup: no executor to time the pruned model with; kept it")
            return pruned
        inputs = _inputs_for(dense, ctx)
        if inputs is None:
            ctx.remark("note", "min_speedup: no inputs to time with (the model's requirements rule "
                               "out a random batch); pass calibration= inputs; kept it")
            return pruned

        def timer(a, b):
            return interleaved_timer(ctx, a, b, inputs)
    timed = timer(dense, pruned)
    t_dense, t_pruned = timed[0], timed[1]
    # a timer may give the median of paired ratios as a third figure (interleaved_timer does)
    speedup = timed[2] if len(timed) > 2 else t_dense / t_pruned if t_pruned > 0 else math.inf
    figures = (f"dense {1e3 * t_dense:.3f} ms, pruned {1e3 * t_pruned:.3f} ms (medians; "
               f"{speedup:.2f}x faster{', median of paired ratios' if len(timed) > 2 else ''})")
    if speedup < min_speedup:
        ctx.remark("missed", f"reverted the pruning: it does not pay on this host: {figures} "
                             f"< min_speedup={min_speedup}", dense_s=t_dense, pruned_s=t_pruned)
        return dense
    ctx.remark("note", f"measured {figures} >= min_speedup={min_speedup}", dense_s=t_dense,
               pruned_s=t_pruned)
    return pruned


def _auto(graph: Graph, ctx: PassContext, budget: float, pattern, criterion, include, exclude):
    """Per-candidate sparsities from measured sensitivity (see ``prune_sensitivity``)."""
    from .prune_sensitivity import DEFAULT_LEVELS, allocate, measure
    if _NM.match(pattern):
        raise PassOptionError("pass 'prune': sparsity=auto picks per-layer fractions; an N:M "
                              f"pattern ({pattern}) has one fixed fraction")
    rows = measure(graph, ctx, pattern, DEFAULT_LEVELS, criterion, include, exclude)
    picked = allocate(rows, budget)
    for r in rows:
        ctx.remark("note", f"sparsity=auto{{budget={budget}}}: {r['label']} gets "
                           f"{100 * picked[r['key']]:.0f}%", candidate=str(r["key"]),
                   sparsity=picked[r["key"]])
    return picked


@register_pass("prune", options=[
    Option("sparsity", str, "0.5", "fraction of weights / channels / heads to remove, or "
           "auto{budget=B}: per-layer fractions removing B overall, picked by measured sensitivity",
           check=_check_sparsity),
    Option("pattern", str, "unstructured", "unstructured | N:M (e.g. 2:4) | channel | head",
           check=_check_pattern),
    Option("scope", str, "layer", "one threshold per layer or one over all", choices=("layer", "global")),
    Option("criterion", str, "l1", "importance of a channel/head: l1 | l2 (sum of its weight "
           "norms) | activation (RMS of its contribution to the layers reading it) | obs (the error "
           "left after re-fitting those layers, removed greedily); both on calibration data",
           choices=("l1", "l2", "activation", "obs")),
    Option("include", list, (), "globs over param names to prune (default: every dot/conv weight)"),
    Option("exclude", list, (), "globs over param names to leave alone"),
    Option("round_to", int, 1, "keep channel/head counts multiples of this", range=(1, None)),
    Option("min_speedup", float, 0.0, "time the result and revert it if dense/pruned is below this",
           range=(0.0, None)),
    Option("reconstruct", str, "false", "channel/head: true re-fits each linear layer reading a "
           "removed unit on its kept inputs (least squares on calibration data) and folds the lost "
           "mean into its bias; sequential re-fits them in graph order, the pruned model's input "
           "(all upstream pruning in force) reproducing the dense model's output",
           check=_check_reconstruct),
    Option("damp", float, 0.01, "reconstruct: ridge term, a fraction of the mean input variance",
           range=(0.0, None)),
    Option("mask_input", str, "", "criterion=activation|obs, reconstruct: a model input (e.g. "
           "attention_mask) whose zeros mark positions (padding) the statistics leave out"),
])
def prune(graph: Graph, ctx: PassContext, sparsity="0.5", pattern="unstructured", scope="layer",
          criterion="l1", include=(), exclude=(), round_to=1, min_speedup=0.0,
          reconstruct=False, damp=0.01, mask_input="") -> Graph:
    """Prune weights: zero the smallest (unstructured, N:M) or remove channels/heads for real."""
    reconstruct = _reconstruct_mode(reconstruct)
    sparsity = _sparsity(sparsity)
    if isinstance(sparsity, tuple):
        sparsity = _auto(graph, ctx, sparsity[1], pattern, criterion, include, exclude)
    if pattern in ("channel", "head"):
        out = _structured(graph, ctx, sparsity, pattern, scope, criterion, include, exclude, round_to,
                          reconstruct, damp, mask_input)
    else:
        if criterion in ("activation", "obs") or reconstruct:
            what = f"criterion={criterion}" if criterion in ("activation", "obs") else \
                f"reconstruct={reconstruct}"
            raise PassOptionError(f"pass 'prune': {what} works with pattern=channel|head, "
                                  f"not pattern={pattern}")
        out = _unstructured(graph, ctx, sparsity, pattern, scope, include, exclude)
    if out is graph:
        return graph
    a, b = graph_stats(graph), graph_stats(out)
    ctx.remark("note", f"params {a.param_elems} -> {b.param_elems} elements "
                       f"({100 * b.sparsity:.1f}% zero), FLOPs {a.flops} -> {b.flops}",
               params_before=a.param_elems, params_after=b.param_elems, flops_before=a.flops,
               flops_after=b.flops, sparsity=b.sparsity)
    if min_speedup > 0:
        out = _speed_checked(ctx, graph, out, min_speedup)
    return out
