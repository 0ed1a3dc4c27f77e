"""Data-aware structured pruning: activation statistics of the layers that read a pruned axis,
importance by output contribution, and least-squares reconstruction of those layers.

A *consumer* is a ``dot_general`` that reads a prunable axis through a weight param: ``x @ W``
contracting axis ``k`` of ``x`` with row axis ``r`` of ``W``. Over the calibration data it
keeps the float64 second moments of ``x`` along ``k`` (``G = X^T X``, the sum ``s`` and the
row count ``n``), from which:

- the importance of a unit owning rows ``P`` is the RMS norm of its contribution to the
  consumer's output, ``sqrt(tr(W_P^T G_PP W_P) / n)`` (for one channel ``||W_j|| * rms(x_j)``,
  Wanda's score; for a head, its contribution through the output projection), summed over the
  consumers the unit feeds;
- after removing rows ``R`` and keeping ``S``, the affine least-squares fit of the consumer's
  output on the kept inputs is ``W_S + (C_SS + lambda I)^-1 C_SR W_R`` with ``C`` the centred
  covariance (the ridge term pulls the kept rows towards their original values), and the bias
  absorbs the mean of what was lost (``mu_R W_R - mu_S Delta``);
- ``criterion=obs`` removes units greedily by the error that fit is left with (structured
  optimal brain surgeon), so a unit that kept ones can stand in for goes first;
- ``reconstruct=sequential`` re-fits the consumers in graph order instead, each on its input
  ``A`` in the masked model with every earlier re-fit in force, to the dense model's output
  ``X W`` (plus, when the output is added to a residual stream, that stream's dense-minus-pruned
  error): ``(C_AA + lambda I)^-1 (C_AX W + C_AD + lambda W_S)`` from float64 moments of one
  dense and one pruned probe per consumer (SparseGPT/OBC's sequential trick).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from .context import MissingPassData, PassContext
from .registry import PassOptionError
from .prune_groups import Analysis

__all__ = ["Consumer", "CrossStats", "Stats", "consumers", "collect", "contribution", "obs_order",
           "reconstruct", "reconstruct_sequential", "sequential_fit"]


@dataclass
class Consumer:
    """A dot reading a prunable axis: ``x`` (axis ``x_axis``) times weight ``w`` (row axis)."""

    node: Node
    w: str
    w_axis: int
    x: str
    x_axis: int
    bias: str | None = None  # a rank-1 param added to the dot's output (its last axis)


@dataclass
class Stats:
    """Second moments of one consumer input along its contracted axis."""

    gram: np.ndarray  # (K, K) float64, sum of x x^T over every other position
    total: np.ndarray  # (K,) float64, sum of x
    rows: int

    def covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """(centred covariance, mean)."""
        mu = self.total / max(self.rows, 1)
        return self.gram / max(self.rows, 1) - np.outer(mu, mu), mu


def _bias_of(graph: Graph, n: Node, w_shape) -> str | None:
    """The rank-1 param added to ``n``'s output along its last axis (the weight's columns)."""
    out = n.outputs[0]
    users = graph.users.get(out.name, ())
    if len(users) != 1 or users[0].op != "add":
        return None
    other = [v for v in users[0].inputs if v.name != out.name]
    if len(other) != 1:
        return None
    b = other[0].name
    src = graph.producers.get(b)
    # a bias broadcast first (broadcast_in_dim(@b) onto the last axis, read only by the add)
    if src is not None and src.op == "broadcast_in_dim" and src.inputs[0].name in graph.params \
            and tuple(src.attrs["broadcast_dimensions"]) == (other[0].type.rank - 1,) \
            and graph.num_uses(other[0]) == 1:
        b = src.inputs[0].name
    if b in graph.params and np.ndim(graph.params[b]) == 1 and \
            np.shape(graph.params[b])[0] == w_shape[-1] and graph.num_uses(graph.param(b)) == 1:
        return b
    return None


def consumers(graph: Graph, an: Analysis) -> list[Consumer]:
    """Every top-level ``x @ W`` whose contracted weight axis the analysis tracks."""
    out = []
    for n in graph.nodes:
        if n.op != "dot_general" or len(n.inputs) != 2:
            continue
        (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
        if lb or rb or len(lc) != 1:
            continue
        a, b = n.inputs
        if (a.name in graph.params) == (b.name in graph.params):
            continue
        if b.name in graph.params:
            w, wa, x, xa = b.name, rc[0], a.name, lc[0]
        else:
            w, wa, x, xa = a.name, lc[0], b.name, rc[0]
        if (w, wa) not in an.base:
            continue
        shape = np.shape(graph.params[w])
        # the bias is only followed for x @ W[K, N] (the output's last axis is W's columns)
        bias = _bias_of(graph, n, shape) if (x == a.name and wa == 0 and len(shape) == 2) else None
        out.append(Consumer(n, w, wa, x, xa, bias))
    return out


def collect(graph: Graph, ctx: PassContext, cons: list[Consumer], why: str,
            mask_input: str = "") -> dict[tuple, Stats]:
    """(x, x_axis) -> Stats over the calibration batches (one compiled probe for all inputs).

    ``mask_input``: a graph input (an attention mask) whose zero entries mark positions left
    out of the statistics (padding), for every activation whose other axes have its shape.
    """
    if not ctx.calibration:
        raise MissingPassData(f"pass '{ctx.pass_name}' {why} needs calibration inputs: pass "
                              "compile(..., calibration=[(x0, ...), (x1, ...)]) (CLI: "
                              "--calibration data.npz), or use criterion=l1|l2 without reconstruct")
    keys = list(dict.fromkeys((c.x, c.x_axis) for c in cons))
    if not keys:
        return {}
    names = list(dict.fromkeys(x for x, _ in keys))
    probe = _probe(graph, names)
    slot = _mask_slot(graph, ctx, mask_input)
    acc: dict[tuple, Stats] = {}
    unmasked: set = set()
    batches = ctx.calibration_batches(graph)
    for b, outs in enumerate(ctx.run_batches(probe, batches, desc="prune: statistics")):
        got = dict(zip(names, outs))
        keep = None if slot is None else np.asarray(batches[b][slot]) != 0
        for x, ax in keys:
            arr = np.moveaxis(np.asarray(got[x], np.float64), ax, -1)
            m = arr.reshape(-1, arr.shape[-1])
            if keep is not None and arr.shape[:-1] == keep.shape:
                m = m[keep.reshape(-1)]
            elif keep is not None:
                unmasked.add(x)
            s = acc.get((x, ax))
            if s is None:
                acc[(x, ax)] = Stats(m.T @ m, m.sum(0), m.shape[0])
            else:
                s.gram += m.T @ m
                s.total += m.sum(0)
                s.rows += m.shape[0]
    for x in sorted(unmasked):
        ctx.remark("note", f"mask_input=%{mask_input.lstrip('%')}: its shape does not match the "
                           f"other axes of %{x}; every position of %{x} counted")
    return acc


def _rows(graph: Graph, c: Consumer) -> np.ndarray:
    """The consumer's weight as (K, everything else), float64."""
    w = np.moveaxis(np.asarray(graph.params[c.w], np.float64), c.w_axis, 0)
    return w.reshape(w.shape[0], -1)


def contribution(graph: Graph, an: Analysis, cons: list[Consumer], stats: dict,
                 units: list[int]) -> dict[int, float]:
    """unit -> RMS norm of its contribution to the outputs of the consumers it feeds (0 when
    it feeds none: the caller falls back to weight norms)."""
    total = dict.fromkeys(units, 0.0)
    fed = set()
    want = set(units)
    for c in cons:
        s = stats.get((c.x, c.x_axis))
        if s is None:
            continue
        ids = an.unit_of[(c.w, c.w_axis)]
        w = _rows(graph, c)
        for u in set(ids.tolist()) & want:
            p = np.nonzero(ids == u)[0]
            wp = w[p]
            total[u] += float(np.sum((s.gram[np.ix_(p, p)] @ wp) * wp)) / max(s.rows, 1)
            fed.add(u)
    return {u: (float(np.sqrt(max(v, 0.0))) if u in fed else None) for u, v in total.items()}


def reconstruct(graph: Graph, ctx: PassContext, an: Analysis, cons: list[Consumer], stats: dict,
                remove, damp: float) -> Graph:
    """``graph`` with each consumer of a removed unit re-fitted on its kept inputs (see the
    module docstring); the removed rows are left as they were (removal slices them off)."""
    gone = set(remove)
    updates: dict[str, np.ndarray] = {}
    for c in cons:
        ids = an.unit_of[(c.w, c.w_axis)]
        drop = np.isin(ids, list(gone))
        s = stats.get((c.x, c.x_axis))
        if not drop.any() or s is None:
            continue
        if drop.all():
            continue  # nothing left to fit with (the analysis keeps the last unit of an axis)
        if graph.num_uses(graph.param(c.w)) != 1:
            ctx.remark("missed", f"did not re-fit @{c.w}: it is read by other ops too", c.node)
            continue
        keep = ~drop
        cov, mu = s.covariance() if c.bias else (s.gram / max(s.rows, 1), np.zeros(len(ids)))
        w = _rows(graph, c)
        css = cov[np.ix_(keep, keep)]
        lam = damp * float(np.mean(np.diag(css))) if css.size else 0.0
        rhs = cov[np.ix_(keep, drop)] @ w[drop]
        a = css + lam * np.eye(css.shape[0])
        try:
            delta = np.linalg.solve(a, rhs)
        except np.linalg.LinAlgError:  # a singular covariance (dead inputs): least norm
            delta = np.linalg.lstsq(a, rhs, rcond=None)[0]
        new = w.copy()
        new[keep] += delta
        orig = np.asarray(graph.params[c.w])
        shape = np.moveaxis(orig, c.w_axis, 0).shape
        updates[c.w] = np.moveaxis(new.reshape(shape), 0, c.w_axis).astype(orig.dtype)
        what = "re-fitted on the kept inputs"
        if c.bias:
            b = np.asarray(graph.params[c.bias])
            shift = mu[drop] @ w[drop] - mu[keep] @ delta
            updates[c.bias] = (b.astype(np.float64) + shift).astype(b.dtype)
            what += f", the lost mean folded into @{c.bias}"
        ctx.remark("applied", f"@{c.w}: {int(keep.sum())} of {len(ids)} inputs kept, {what} "
                              f"(least squares over {s.rows} rows, damp {damp:g})", c.node,
                   weight=c.w, kept=int(keep.sum()), inputs=len(ids))
    return graph.with_params(updates) if updates else graph


def _metric(c: Consumer, s: Stats, damp: float) -> np.ndarray:
    """The (damped) input covariance the consumer's re-fit works with (centred when it has a
    bias to absorb the mean, the raw second moment otherwise)."""
    cov = s.covariance()[0] if c.bias else s.gram / max(s.rows, 1)
    return cov + damp * float(np.mean(np.diag(cov))) * np.eye(cov.shape[0])


def obs_order(graph: Graph, an: Analysis, cons: list[Consumer], stats: dict, units: list[int],
              damp: float, limit: int) -> dict[int, float] | None:
    """unit -> score, removing greedily the unit whose loss the re-fitted consumers feel least
    (structured optimal brain surgeon: ``tr(W_P^T [H^-1]_PP^-1 W_P)`` with ``H`` the damped
    input covariance, the weights and ``H^-1`` updated after each removal). Scores rise with
    the order of removal (a running maximum of the error); units past ``limit`` removals
    score above all removed ones. None when a unit feeds no consumer with statistics.
    """
    want = set(units)
    layers = []
    for c in cons:
        s = stats.get((c.x, c.x_axis))
        ids = an.unit_of[(c.w, c.w_axis)]
        mine = want & set(ids.tolist())
        if not mine:
            continue
        if s is None:
            return None
        hinv = np.linalg.inv(_metric(c, s, damp))
        layers.append((ids, _rows(graph, c).copy(), hinv))
    fed = {u for ids, _, _ in layers for u in set(ids.tolist()) & want}
    if fed != want:
        return None
    pos = [{u: np.nonzero(ids == u)[0] for u in set(ids.tolist()) & want} for ids, _, _ in layers]
    alive = list(units)
    scores: dict[int, float] = {}
    running = 0.0

    def cost() -> np.ndarray:
        d = np.zeros(len(alive))
        for (ids, w, hinv), where in zip(layers, pos):
            single = all(len(where.get(u, ())) <= 1 for u in alive)
            if single:  # one row each: vectorized
                idx = np.array([where[u][0] if u in where else -1 for u in alive])
                ok = idx >= 0
                d[ok] += np.sum(w[idx[ok]] ** 2, 1) / np.maximum(np.diag(hinv)[idx[ok]], 1e-300)
                continue
            for i, u in enumerate(alive):
                p = where.get(u)
                if p is not None and len(p):
                    wp = w[p]
                    d[i] += float(np.sum(wp * np.linalg.solve(hinv[np.ix_(p, p)], wp)))
        return d

    for _ in range(min(limit, len(alive) - 1)):
        d = cost()
        j = int(np.argmin(d))
        running = max(running, float(d[j]))
        u = alive.pop(j)
        scores[u] = running
        for (ids, w, hinv), where in zip(layers, pos):
            p = where.get(u)
            if p is None or not len(p):
                continue
            blk = np.linalg.inv(hinv[np.ix_(p, p)])
            w -= hinv[:, p] @ (blk @ w[p])  # the surviving rows absorb the loss
            hinv -= hinv[:, p] @ blk @ hinv[p, :]
    if alive:
        for u, v in zip(alive, cost()):
            scores[u] = running + float(v) + 1e-12
    return scores


@dataclass
class CrossStats:
    """Moments of one consumer input in the pruned model (``a``) against the dense one (``x``)."""

    gram: np.ndarray  # (K, K) sum of a a^T
    cross: np.ndarray  # (K, K) sum of a x^T
    total_a: np.ndarray
    total_x: np.ndarray
    rows: int
    resid: np.ndarray | None = None  # (K, N) sum of a d^T, d the residual's dense - pruned
    total_d: np.ndarray | None = None


def _mask_slot(graph: Graph, ctx: PassContext, mask_input: str) -> int | None:
    inputs = [v.name for v in graph.inputs]
    name = mask_input.lstrip("%")
    if not name:
        return None
    if name not in inputs:
        import difflib
        close = difflib.get_close_matches(name, inputs, n=1)
        raise PassOptionError(f"pass '{ctx.pass_name}' option 'mask_input': {graph.name} has no "
                              f"input %{name}" + (f" (closest: %{close[0]})" if close
                              else f"; its inputs: {', '.join('%' + n for n in inputs)}"))
    return inputs.index(name)


def _probe(graph: Graph, names) -> Graph:
    values = {v.name: v for n in graph.nodes for v in n.outputs}
    values.update({v.name: v for v in graph.inputs})
    return graph.replace(outputs=tuple(values[x] for x in names))


def _flat(arr, ax: int, keep) -> np.ndarray:
    arr = np.moveaxis(np.asarray(arr, np.float64), ax, -1)
    m = arr.reshape(-1, arr.shape[-1])
    if keep is not None and arr.shape[:-1] == keep.shape:
        m = m[keep.reshape(-1)]
    return m


def residual_of(graph: Graph, c: Consumer) -> str | None:
    """The other operand of the ``add`` the consumer's output (after its bias) flows into
    alone, a residual stream of the output's shape; None when there is none."""
    a = c.node.inputs[0]
    if c.x != a.name or c.w_axis != 0 or np.ndim(graph.params[c.w]) != 2 or \
            c.x_axis != a.type.rank - 1:
        return None  # only x @ W[K, N] (the output's last axis is W's columns)
    out = c.node.outputs[0]
    if c.bias:
        users = graph.users.get(out.name, ())
        out = users[0].outputs[0]  # the bias add (_bias_of checked it is the only user)
    users = graph.users.get(out.name, ())
    if len(users) != 1 or users[0].op != "add":
        return None
    other = [v for v in users[0].inputs if v.name != out.name]
    if len(other) != 1 or other[0].name in graph.params or other[0].type.shape != out.type.shape:
        return None
    return other[0].name


def _cross_stats(dense: Graph, current: Graph, ctx: PassContext, c: Consumer,
                 slot: int | None, resid: str | None = None) -> CrossStats:
    """One pass over the calibration batches: the consumer's input in ``current`` (all
    upstream pruning and re-fits in force) against its input in ``dense``, same batch; with
    ``resid``, also against the residual stream's error (dense minus pruned)."""
    batches = ctx.calibration_batches(dense)
    names = [c.x] + ([resid] if resid else [])
    ref = ctx.run_batches(_probe(dense, names), batches, desc="prune: dense inputs")
    now = ctx.run_batches(_probe(current, names), batches, desc="prune: pruned inputs")
    st = None
    for b, (xd, xc) in enumerate(zip(ref, now)):
        keep = None if slot is None else np.asarray(batches[b][slot]) != 0
        x, a = _flat(xd[0], c.x_axis, keep), _flat(xc[0], c.x_axis, keep)
        if st is None:
            st = CrossStats(a.T @ a, a.T @ x, a.sum(0), x.sum(0), a.shape[0])
        else:
            st.gram += a.T @ a
            st.cross += a.T @ x
            st.total_a += a.sum(0)
            st.total_x += x.sum(0)
            st.rows += a.shape[0]
        if resid:
            d = _flat(xd[1], -1, keep) - _flat(xc[1], -1, keep)
            st.resid = a.T @ d if st.resid is None else st.resid + a.T @ d
            st.total_d = d.sum(0) if st.total_d is None else st.total_d + d.sum(0)
    return st


def sequential_fit(w: np.ndarray, keep: np.ndarray, s: CrossStats, damp: float,
                   affine: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(new kept rows, bias shift): ``argmin ||A_S W' - X W||^2 + lambda ||W' - W_S||^2`` with
    ``A`` the pruned model's input, ``X`` the dense one's; centred (a bias absorbs the means)
    when ``affine``. Equal to the dense re-fit when ``A == X``."""
    n = max(s.rows, 1)
    mu_a, mu_x = s.total_a / n, s.total_x / n
    caa = s.gram[np.ix_(keep, keep)] / n
    cax = s.cross[keep] / n
    if affine:
        caa = caa - np.outer(mu_a[keep], mu_a[keep])
        cax = cax - np.outer(mu_a[keep], mu_x)
    lam = damp * float(np.mean(np.diag(caa))) if caa.size else 0.0
    a = caa + lam * np.eye(caa.shape[0])
    rhs = cax @ w + lam * w[keep]
    mu_d = 0.0
    if s.resid is not None:  # the target also makes up for the residual stream's error
        mu_d = s.total_d / n
        rhs = rhs + s.resid[keep] / n - (np.outer(mu_a[keep], mu_d) if affine else 0.0)
    try:
        new = np.linalg.solve(a, rhs)
    except np.linalg.LinAlgError:  # a singular covariance (dead inputs): least norm
        new = np.linalg.lstsq(a, rhs, rcond=None)[0]
    shift = (mu_x @ w + mu_d - mu_a[keep] @ new) if affine else None
    return new, shift


def reconstruct_sequential(graph: Graph, ctx: PassContext, an: Analysis, cons: list[Consumer],
                           remove, damp: float, mask_input: str = "",
                           residual: bool = True) -> Graph:
    """``graph`` with each consumer of a removed unit re-fitted in graph order so that the
    pruned model's input to it (carrying every upstream removal and re-fit) reproduces the
    dense model's output of it (SparseGPT/OBC's sequential trick); removed rows left as
    they were (removal slices them off)."""
    from .prune_groups import zero_units
    gone = set(remove)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    slot = _mask_slot(graph, ctx, mask_input)
    current = zero_units(graph, an, gone)  # the masked model: what removal will compute
    updates: dict[str, np.ndarray] = {}
    for c in sorted(cons, key=lambda c: order.get(id(c.node), 0)):
        ids = an.unit_of[(c.w, c.w_axis)]
        drop = np.isin(ids, list(gone))
        if not drop.any() or drop.all():
            continue
        if graph.num_uses(graph.param(c.w)) != 1:
            ctx.remark("missed", f"did not re-fit @{c.w}: it is read by other ops too", c.node)
            continue
        keep = ~drop
        resid = residual_of(graph, c) if residual else None
        s = _cross_stats(graph, current, ctx, c, slot, resid)
        w = _rows(graph, c)
        new, shift = sequential_fit(w, keep, s, damp, c.bias is not None)
        full = w.copy()
        full[keep] = new
        orig = np.asarray(graph.params[c.w])
        shape = np.moveaxis(orig, c.w_axis, 0).shape
        updates[c.w] = np.moveaxis(full.reshape(shape), 0, c.w_axis).astype(orig.dtype)
        masked = full.copy()
        masked[drop] = 0
        now = {c.w: np.moveaxis(masked.reshape(shape), 0, c.w_axis).astype(orig.dtype)}
        what = "re-fitted in sequence to the dense model's output" + (
            f" (plus the error of the residual %{resid})" if resid else "")
        if c.bias:
            b = np.asarray(graph.params[c.bias])
            updates[c.bias] = now[c.bias] = (b.astype(np.float64) + shift).astype(b.dtype)
            what += f", the lost mean folded into @{c.bias}"
        current = current.with_params(now)
        ctx.remark("applied", f"@{c.w}: {int(keep.sum())} of {len(ids)} inputs kept, {what} "
                              f"(least squares over {s.rows} rows, damp {damp:g})", c.node,
                   weight=c.w, kept=int(keep.sum()), inputs=len(ids))
    return graph.with_params(updates) if updates else graph
