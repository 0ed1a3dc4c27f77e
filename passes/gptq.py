"""gptq: error-compensating weight rounding for low-bit weights (Frantar et al. 2023).

Round-to-nearest quantizes every weight on its own. GPTQ quantizes a dense layer's weight one
input row at a time and spreads each row's rounding error over the rows not yet quantized, in
proportion to how the layer's calibration inputs correlate (the Hessian ``H = XᵀX`` of the
layer-wise squared error). The result is a weight that lies exactly on the quantization grid
(per output channel, per group of ``group_size`` input rows) and whose layer output is closer to
the float one than round-to-nearest's.

The pass stores the rounded weight (still float, so the model runs unchanged) and records the
grid in a ``quant`` annotation on the weight (dtype, scheme, axis, block size; the scales as
payload), so that ``quantize`` and ``lower-quant`` keep exactly this grid.
"""
from __future__ import annotations

import fnmatch

import numpy as np

from ..errors import PassFailure
from ..ir import Annotation, Graph, Node, Value
from ..ir.types import is_float
from .context import PassContext
from .registry import Option, register_pass



class GptqError(PassFailure, ValueError):
    """gptq could not measure or solve for a layer."""


def gptq_round(w: np.ndarray, hessian: np.ndarray, bits: int, group_size: int,
               damp: float = 0.01, act_order: bool = False,
               clip_search: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(rounded w, scales)`` for ``w[K, N]`` (``x @ w``) with ``hessian = XᵀX`` (K x K).

    Symmetric grid: ``q = clip(round(w / s), -qmax-1, qmax)``, one scale per output column and
    group of ``group_size`` rows; scales are ``[ceil(K/group), N]``. ``act_order`` visits rows
    by decreasing Hessian diagonal (the inputs that matter most first, while the most rows are
    left to absorb their error); groups stay contiguous in the original row order.
    ``clip_search`` (without act_order) picks each group's scale by ``search_scale`` (else
    its max |w| / qmax).
    """
    w = np.asarray(w, np.float64)
    g = w.shape[0] if group_size <= 0 else group_size
    qmax = 2 ** (bits - 1) - 1
    if act_order:
        # the group scales are fixed before the updates move the weights: a clipped range
        # measured worse there (tests/passes/test_gptq.py), so clip_search does not apply
        h = np.asarray(hessian, np.float64)
        scales = _group_scales(w, g, qmax)
        perm = np.argsort(-np.diag(hessian), kind="stable")
        inv = np.argsort(perm)
        q, _ = _gptq_rows(w[perm], h[np.ix_(perm, perm)], bits, scales[perm // g], damp)
        return q[inv], scales
    return _gptq_rows(w, hessian, bits, None, damp, g, clip_search)


def _group_scales(w: np.ndarray, g: int, qmax: int) -> np.ndarray:
    s = np.stack([np.abs(w[i:i + g]).max(0) for i in range(0, w.shape[0], g)]) / qmax
    return np.where(s > 0, s, 1.0)


CLIP_RATIOS = np.linspace(1.0, 0.5, 26)
"""Clipping ratios (of a group's max |w|) ``search_scale`` tries: 1.0, 0.98, ... 0.5."""


def search_scale(w: np.ndarray, hinv: np.ndarray, qmax: int) -> np.ndarray:
    """Per column of the group ``w[g, N]``: the scale ``r * max|w| / qmax`` (``r`` over
    CLIP_RATIOS) with the least GPTQ loss over the group, ``sum_i e_i² / U_ii²`` with each row's
    error ``e_i`` spread over the rows after it (``hinv``: the group's block of the upper
    Cholesky factor U of H⁻¹). The AWQ / "MSE clip" search, measured as GPTQ will round."""
    amax = np.abs(w).max(0)
    amax = np.where(amax > 0, amax, 1.0)
    s = CLIP_RATIOS[:, None] * amax[None, :] / qmax          # [R, N]
    cur = np.broadcast_to(w, (len(CLIP_RATIOS), *w.shape)).copy()  # [R, g, N]
    loss = np.zeros(s.shape)
    for i in range(w.shape[0]):  # every ratio at once, each column on its own (as GPTQ)
        q = np.clip(np.round(cur[:, i] / s), -qmax - 1, qmax) * s
        err = (cur[:, i] - q) / hinv[i, i]
        loss += err * err
        cur[:, i + 1:] -= hinv[i, i + 1:][None, :, None] * err[:, None, :]
    return s[np.argmin(loss, axis=0), np.arange(w.shape[1])]


def _gptq_rows(w, hessian, bits, row_scales, damp, g=0, clip_search=False):
    """GPTQ over rows in the given order; ``row_scales[i]`` fixes row i's scale (else
    per-group scales are taken from the updated weights as each group starts)."""
    w = np.array(w, np.float64)
    k, n = w.shape
    qmax = 2 ** (bits - 1) - 1
    h = np.array(hessian, np.float64)
    dead = np.diag(h) == 0  # inputs that never vary: their rows cannot matter
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h += np.eye(k) * damp * np.mean(np.diag(h))
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H^-1
    except np.linalg.LinAlgError:
        raise GptqError("the calibration Hessian is not positive definite even after "
                        "dampening; give more calibration batches or raise damp") from None
    scales = np.zeros(((k + g - 1) // g, n)) if row_scales is None else None
    out = np.zeros_like(w)
    for i in range(k):
        if row_scales is not None:
            s = row_scales[i]
        else:
            if i % g == 0:  # a new group: its scale from the weights as updated so far
                scales[i // g] = (search_scale(w[i:i + g], hinv[i:i + g, i:i + g], qmax)
                                  if clip_search else _group_scales(w[i:i + g], g, qmax)[0])
            s = scales[i // g]
        q = np.clip(np.round(w[i] / s), -qmax - 1, qmax) * s
        out[i] = q
        err = (w[i] - q) / hinv[i, i]
        w[i + 1:] -= np.outer(hinv[i, i + 1:], err)
    return out, scales


def _dense_weights(graph: Graph, include, exclude) -> dict[str, list[tuple[Node, Value]]]:
    """Weight param -> [(dot node, its data input)] for dots ``x @ W`` with W[K, N] a param."""
    found: dict[str, list[tuple[Node, Value]]] = {}
    for n in graph.nodes:
        if n.op != "dot_general" or len(n.inputs) != 2:
            continue
        (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
        x, w = n.inputs
        if (lb or rb or tuple(rc) != (0,) or w.type.rank != 2 or w.name not in graph.params
                or tuple(lc) != (x.type.rank - 1,) or not is_float(w.type.dtype)):
            continue
        if not any(fnmatch.fnmatchcase(w.name, p) for p in include) or any(
                fnmatch.fnmatchcase(w.name, p) for p in exclude):
            continue
        found.setdefault(w.name, []).append((n, x))
    return found


@register_pass("gptq", options=[
    Option("bits", int, 4, "weight bits (symmetric integer grid)", range=(2, 8)),
    Option("group_size", int, 128, "input rows sharing one scale (0: one per output channel)",
           range=(0, None)),
    Option("damp", float, 0.01, "Hessian dampening, as a fraction of its mean diagonal",
           range=(0.0, 1.0)),
    Option("act_order", bool, True, "visit input rows by decreasing importance"),
    Option("clip_search", bool, True, "choose each group's scale by shrinking its range over a "
           "grid (1.0 to 0.5 of max |w|), least GPTQ error on the calibration inputs (not "
           "with act_order: its scales are fixed before the weights move)"),
    Option("include", list, ("*",), "globs of weight names to round"),
    Option("exclude", list, (), "globs of weight names to leave alone"),
], needs=("calibration",))
def gptq(graph: Graph, ctx: PassContext | None = None, bits: int = 4, group_size: int = 128,
         damp: float = 0.01, act_order: bool = True, clip_search: bool = True, include=("*",),
         exclude=()) -> Graph:
    """Round dense weights to a low-bit grid, compensating each row's error (GPTQ)."""
    if ctx is None:
        raise GptqError("gptq needs calibration data: compile(..., calibration=)")
    layers = _dense_weights(graph, include, exclude)
    shared = [w for w in layers if graph.num_uses(graph.param(w)) != len(layers[w])]
    for w in shared:
        ctx.remark("missed", f"did not round @{w}: it is read by other ops too", layers[w][0][0])
        del layers[w]
    if not layers:
        return graph
    inputs: list[Value] = []
    slot: dict[str, list[int]] = {}
    for w, uses in layers.items():
        for _, x in uses:
            if x.name not in [v.name for v in inputs]:
                inputs.append(x)
        slot[w] = [next(i for i, v in enumerate(inputs) if v.name == x.name) for _, x in uses]
    probe = graph.replace(outputs=tuple(inputs))
    hess: list[np.ndarray | None] = [None] * len(inputs)
    rows = 0
    for b, batch in enumerate(ctx.require("calibration")):
        for i, o in enumerate(ctx.run(probe, *batch, jit=True)):
            x = np.asarray(o, np.float64).reshape(-1, o.shape[-1])
            if not np.all(np.isfinite(x)):
                raise GptqError(f"gptq: calibration batch {b} makes %{inputs[i].name} "
                                "non-finite")
            hess[i] = x.T @ x if hess[i] is None else hess[i] + x.T @ x
        rows += 1
    updates: dict[str, np.ndarray] = {}
    notes = []
    for w, idx in slot.items():
        arr = graph.params[w]
        hsum = sum(hess[i] for i in idx)
        q, scales = gptq_round(arr, hsum, bits, group_size, damp, act_order, clip_search)
        updates[w] = q.astype(arr.dtype)
        g = arr.shape[0] if group_size <= 0 else group_size
        notes.append(Annotation(w, "quant", {"dtype": f"i{bits}", "scheme": "symmetric",
                                             "axis": 1, "block_size": g, "source": "gptq"},
                                scales.astype(np.float32)))
        node = layers[w][0][0]
        ctx.remark("applied", f"rounded @{w} {tuple(arr.shape)} to int{bits}, groups of {g} "
                   "rows, error compensated", node, weight=w)
    return graph.with_params(updates).with_annotations(notes)
