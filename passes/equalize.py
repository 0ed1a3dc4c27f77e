"""Scale migration before quantization: cross-layer equalization and SmoothQuant.

Both rescale channels so that one tensor's range moves into another's without changing what the
model computes (exact up to float rounding):

- ``equalize`` (cross-layer equalization, Nagel et al. 2019, as in AIMET): for two linear
  layers joined channel by channel through a bias and a positively homogeneous activation
  (none, relu, leaky relu), output channel ``i`` of the first is divided by ``s_i`` and input
  channel ``i`` of the second multiplied by it, with ``s_i = sqrt(r1_i / r2_i)`` (``r`` the
  channel's largest magnitude), so both weights get the same per-channel range.
- ``smooth-quant`` (Xiao et al. 2023): a dense layer's input channel ``k`` with outlier
  activations is divided by ``s_k = max|X_k|^a / max|W_k|^(1-a)`` and the weight row multiplied
  by it. The division is folded into the per-channel scale/shift that makes the input (a layer
  norm's gamma and beta), or into the output channels of the linear layer that makes it; all
  readers of the input (Q, K and V) share one ``s``. ``search`` picks ``a`` per input from a
  grid by the simulated W8A8 error; ``mode=weight_only`` is AWQ (Lin et al. 2024) instead:
  ``s_k = mean|X_k|^a``, scored with low-bit group-wise weights and float inputs.

Only params are changed, in place by name (shapes stay), and only params nobody else reads.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value, make_node, numpy_dtype
from ..errors import PassFailure
from ..ir.types import is_float
from .context import PassContext
from .registry import Option, register_pass

_VIEWS = ("broadcast_in_dim", "reshape", "convert")


class _View:
    """Read-only graph queries shared by both passes."""

    def __init__(self, graph: Graph):
        self.g = graph

    def producer(self, v: Value) -> Node | None:
        return self.g.producer(v)

    def uses(self, v: Value) -> int:
        return self.g.num_uses(v)

    def param(self, v: Value) -> np.ndarray | None:
        arr = self.g.params.get(v.name)
        return None if arr is None or getattr(arr, "abstract", False) else arr

    def channel_param(self, v: Value, axis: int, n: int) -> str | None:
        """The param that ``v`` broadcasts along ``axis`` only (n values), read once, else None."""
        for _ in range(8):
            t = v.type.shape
            if not (0 <= axis < len(t)) or t[axis] != n:
                return None
            if self.param(v) is not None:
                others = [d for i, d in enumerate(t) if i != axis]
                ok = all(d == 1 for d in others) and self.uses(v) == 1
                return v.name if ok else None
            p = self.producer(v)
            if p is None or p.op not in _VIEWS or len(p.inputs) != 1 or self.uses(v) != 1:
                return None
            src = p.inputs[0]
            if p.op == "broadcast_in_dim":
                bd = tuple(p.attrs["broadcast_dimensions"])
                if axis not in bd:
                    return None
                axis = bd.index(axis)
            elif p.op == "reshape":
                big = [i for i, d in enumerate(src.type.shape) if d != 1]
                if len(big) != 1 or any(d != 1 for i, d in enumerate(t) if i != axis):
                    return None
                axis = big[0]
            v = src
        return None

    def weight_axes(self, node: Node, data: Value) -> tuple[str, int, int, int] | None:
        """For a dot/conv reading ``data`` and a weight param:
        ``(weight name, weight in-axis, weight out-axis, data channel axis)``."""
        if node.op == "dot_general":
            (lc, rc), (lb, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims",
                                                                                 ((), ()))
            if lb or rb or len(lc) != 1 or len(node.inputs) != 2:
                return None
            lhs, rhs = node.inputs
            if lhs.name == data.name and self.param(rhs) is not None and rhs.type.rank == 2:
                return rhs.name, rc[0], 1 - rc[0], lc[0]
            if rhs.name == data.name and self.param(lhs) is not None and lhs.type.rank == 2:
                return lhs.name, lc[0], 1 - lc[0], rc[0]
            return None
        if node.op == "conv" and node.inputs[0].name == data.name:
            if node.attrs.get("feature_group_count", 1) != 1 or node.attrs.get(
                    "batch_group_count", 1) != 1 or self.param(node.inputs[1]) is None:
                return None
            lhs, rhs, _ = node.attrs["dimension_numbers"]
            return node.inputs[1].name, rhs.index("I"), rhs.index("O"), lhs.index("C")
        return None

    def out_channel_axis(self, node: Node) -> tuple[str, int, int] | None:
        """For a dot/conv with a weight param: ``(weight, weight out-axis, output channel axis)``."""
        if node.op == "dot_general" and len(node.inputs) == 2:
            (lc, rc), (lb, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims",
                                                                                 ((), ()))
            lhs, rhs = node.inputs
            if lb or rb or len(lc) != 1:
                return None
            if self.param(rhs) is not None and rhs.type.rank == 2:
                return rhs.name, 1 - rc[0], node.output.type.rank - 1
            if self.param(lhs) is not None and lhs.type.rank == 2:
                return lhs.name, 1 - lc[0], 0
            return None
        if node.op == "conv" and self.param(node.inputs[1]) is not None:
            if node.attrs.get("feature_group_count", 1) != 1:
                return None
            _, rhs, out = node.attrs["dimension_numbers"]
            return node.inputs[1].name, rhs.index("O"), out.index("C")
        return None


def _scale_along(arr: np.ndarray, axis: int, s: np.ndarray, divide: bool = False) -> np.ndarray:
    shape = [1] * arr.ndim
    shape[axis] = s.size
    f = s.reshape(shape)
    out = arr.astype(np.float64) / f if divide else arr.astype(np.float64) * f
    return out.astype(arr.dtype)


def _absmax(arr: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(i for i in range(arr.ndim) if i != axis)
    return np.abs(arr.astype(np.float64)).max(axis=other) if other else np.abs(arr)


def _linear_source(view: _View, v: Value):
    """How the channels of ``v`` are made: ``(first linear node, bias param, act nodes)``.

    Walks back from ``v`` through one activation and one bias add, each read once.
    """
    acts: list[Node] = []
    p = view.producer(v)
    if p is not None and view.uses(v) == 1 and (
            (p.op == "composite" and p.attrs.get("name") == "jax.nn.relu") or p.op == "relu"):
        acts.append(p)
        v, p = p.inputs[0], view.producer(p.inputs[0])
    elif p is not None and p.op == "max" and view.uses(v) == 1:
        zero = [i for i, x in enumerate(p.inputs) if (q := view.producer(x)) is not None
                and q.op == "constant" and q.attrs.get("value") == 0]
        if len(zero) == 1:
            acts.append(p)
            v = p.inputs[1 - zero[0]]
            p = view.producer(v)
    bias = None
    if p is not None and p.op == "add" and view.uses(v) == 1:
        for x, b in (p.inputs, p.inputs[::-1]):
            q = view.producer(x)
            if q is not None and q.op in ("dot_general", "conv") and view.uses(x) == 1:
                oc = view.out_channel_axis(q)
                if oc is None:
                    continue
                bias = view.channel_param(b, oc[2], x.type.shape[oc[2]])
                if bias is not None:
                    return q, bias, acts
        return None
    if p is not None and p.op in ("dot_general", "conv") and view.uses(v) == 1:
        return p, None, acts
    return None


def equalize_pairs(graph: Graph, ctx: PassContext | None, iterations: int) -> Graph:
    """Cross-layer equalization over every linear → (bias) → (relu) → linear pair."""
    params: dict[str, np.ndarray] = {}
    pairs = 0
    for sweep in range(iterations):
        view = _View(graph.with_params(params) if params else graph)
        pairs = 0
        for node in view.g.nodes:
            if node.op not in ("dot_general", "conv"):
                continue
            data = node.inputs[0] if node.op == "conv" else None
            cands = [data] if data is not None else list(node.inputs)
            for d in cands:
                ax = view.weight_axes(node, d)
                if ax is None:
                    continue
                w2, in2, _, chan = ax
                src = _linear_source(view, d)
                if src is None:
                    continue
                first, bias, acts = src
                oc = view.out_channel_axis(first)
                if oc is None or oc[2] != chan or oc[0] == w2:
                    continue
                w1, out1, _ = oc
                if view.uses(view.g.param(w1)) != 1 or view.uses(view.g.param(w2)) != 1:
                    continue  # a shared weight serves other layers too
                a1, a2 = view.param(view.g.param(w1)), view.param(view.g.param(w2))
                if not (is_float(_dt(a1)) and is_float(_dt(a2))):
                    continue
                r1, r2 = _absmax(a1, out1), _absmax(a2, in2)
                ok = (r1 > 0) & (r2 > 0)
                s = np.where(ok, np.sqrt(np.where(ok, r1, 1) / np.where(ok, r2, 1)), 1.0)
                params[w1] = _scale_along(a1, out1, s, divide=True)
                params[w2] = _scale_along(a2, in2, s)
                if bias is not None:
                    b = view.param(view.g.param(bias))
                    params[bias] = (b.astype(np.float64).reshape(-1) / s).astype(
                        b.dtype).reshape(b.shape)
                pairs += 1
                if ctx is not None and sweep == 0:
                    ctx.remark("applied", f"equalized @{w1} -> @{w2} ({s.size} channels, "
                               f"range ratio {float(r1.max() / max(r1.min(), 1e-30)):.3g} -> "
                               f"{float((r1 / s).max() / max((r1 / s).min(), 1e-30)):.3g})",
                               node, first=w1, second=w2)
                view = _View(graph.with_params(params))
    return graph.with_params(params) if params else graph


def _dt(a: np.ndarray) -> str:
    from ..ir.types import dtype_name
    return dtype_name(a.dtype)


@register_pass("equalize", options=[
    Option("iterations", int, 1, "equalization sweeps (each rebalances every pair)",
           range=(1, 20)),
])
def equalize(graph: Graph, ctx: PassContext | None = None, iterations: int = 1) -> Graph:
    """Cross-layer equalization: rebalance per-channel weight ranges of consecutive linear layers."""
    return equalize_pairs(graph, ctx, iterations)


_SAMPLE_ROWS = 1024  # rows of each input kept to check that smoothing pays (bounded memory)


def _input_channel_stats(graph: Graph, ctx: PassContext, values: list[Value]):
    """Per-channel (last axis) max |x| of each value over the calibration batches, and its
    first rows (at most _SAMPLE_ROWS) as a sample."""
    probe = graph.replace(outputs=tuple(values))
    stats: list[np.ndarray | None] = [None] * len(values)
    samples: list[list[np.ndarray]] = [[] for _ in values]
    for b, batch in enumerate(ctx.require("calibration")):
        outs = ctx.run(probe, *batch, jit=True)
        for i, o in enumerate(outs):
            o = np.asarray(o, np.float64)
            if not np.all(np.isfinite(o)):
                raise SmoothQuantError(f"smooth-quant: calibration batch {b} makes %"
                                       f"{values[i].name} non-finite; cannot take its range")
            rows = o.reshape(-1, o.shape[-1])
            m = np.abs(rows).max(axis=0)
            stats[i] = m if stats[i] is None else np.maximum(stats[i], m)
            have = sum(len(r) for r in samples[i])
            if have < _SAMPLE_ROWS:
                samples[i].append(rows[:_SAMPLE_ROWS - have])
    return stats, [np.concatenate(r) for r in samples]


def _int8_error(x: np.ndarray, xmax: float, weights: list[tuple[np.ndarray, int]]) -> float:
    """Relative error of ``x @ W`` for every reader, with x quantized per tensor (range
    ``xmax``) and each W per output channel, symmetric int8: what W8A8 will see."""
    sx = max(xmax, 1e-30) / 127
    xq = np.clip(np.round(x / sx), -127, 127) * sx
    num = den = 0.0
    for w, ax in weights:
        w2 = np.moveaxis(w.astype(np.float64), ax, 0)  # [K, N]
        sw = np.maximum(np.abs(w2).max(axis=0), 1e-30) / 127
        wq = np.clip(np.round(w2 / sw), -127, 127) * sw
        ref = x @ w2
        num += float(np.sum((xq @ wq - ref) ** 2))
        den += float(np.sum(ref ** 2))
    return (num / max(den, 1e-300)) ** 0.5


def smooth_scales(xmax: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's ``s_k = max|X_k|^alpha / max|W_k|^(1-alpha)`` (1 where either is 0)."""
    ok = (xmax > 0) & (wmax > 0)
    s = np.where(ok, np.power(np.where(ok, xmax, 1), alpha)
                 / np.power(np.where(ok, wmax, 1), 1 - alpha), 1.0)
    return np.clip(s, 1e-5, 1e5)


ALPHAS = np.round(np.linspace(0.0, 1.0, 21), 2)
"""The migration strengths ``search_alpha`` tries (as llm-compressor / INC's auto-alpha)."""


def awq_scales(xmean: np.ndarray, alpha: float) -> np.ndarray:
    """AWQ's ``s_k = mean|X_k|^alpha``, normalized to a geometric mid-range of 1."""
    s = np.power(np.maximum(xmean, 1e-4), alpha)
    return s / np.sqrt(s.max() * s.min())


def _weight_only_error(x: np.ndarray, weights: list[tuple[np.ndarray, int]], bits: int,
                       group: int) -> float:
    """Relative error of ``x @ W`` for every reader, x float and each W rounded to a symmetric
    ``bits`` grid per output column and group of ``group`` input rows (what weight-only
    group-wise quantization will see)."""
    qmax = 2 ** (bits - 1) - 1
    num = den = 0.0
    for w, ax in weights:
        w2 = np.moveaxis(w.astype(np.float64), ax, 0)  # [K, N]
        g = group or w2.shape[0]
        wq = np.empty_like(w2)
        for i in range(0, w2.shape[0], g):
            blk = w2[i:i + g]
            sw = np.maximum(np.abs(blk).max(axis=0), 1e-30) / qmax
            wq[i:i + g] = np.clip(np.round(blk / sw), -qmax - 1, qmax) * sw
        ref = x @ w2
        num += float(np.sum((x @ wq - ref) ** 2))
        den += float(np.sum(ref ** 2))
    return (num / max(den, 1e-300)) ** 0.5


def search_alpha(sample: np.ndarray, xmax: np.ndarray, wmax: np.ndarray,
                 weights: list[tuple[np.ndarray, int]], default: float,
                 weight_only: tuple[int, int] | None = None) -> tuple[float, float]:
    """``(alpha, its error)``: the ALPHAS point whose smoothing leaves the least simulated
    error of the readers on ``sample``; ``default`` on ties. W8A8 (``_int8_error``, SmoothQuant's
    scales), or with ``weight_only=(bits, group)`` weight-only rounding (``_weight_only_error``,
    AWQ's scales from the sample's mean |x|)."""
    def err(a):
        return _smoothed_error(sample, xmax, weights,
                               _scales(sample, xmax, wmax, a, weight_only), weight_only)
    best_a, best = default, err(default)
    for a in ALPHAS:
        e = err(float(a))
        if e < best:
            best_a, best = float(a), e
    return best_a, best


def _scales(sample, xmax, wmax, alpha, weight_only):
    if weight_only:
        return awq_scales(np.abs(sample).mean(axis=0), alpha)
    return smooth_scales(xmax, wmax, alpha)


def _smoothed_error(sample, xmax, weights, s, weight_only=None) -> float:
    scaled = [(_scale_along(w, ax, s).astype(np.float64), ax) for w, ax in weights]
    if weight_only:
        return _weight_only_error(sample / s, scaled, *weight_only)
    return _int8_error(sample / s, float((xmax / s).max()), scaled)


class SmoothQuantError(PassFailure, ValueError):
    """smooth-quant could not measure the activations it needs."""


def _fold_target(view: _View, v: Value, n: int):
    """Where ``x / s`` along the last axis of ``v`` can be folded: a list of
    ``(param, axis-of-param-view, kind)`` edits, or None.

    ``v = u * gamma (+ beta)``: gamma and beta divide by s (a layer norm's affine part).
    ``v = x @ W (+ b)``: W's output channels and b divide by s.
    """
    axis = v.type.rank - 1
    edits = []
    p = view.producer(v)
    if p is not None and p.op == "add":
        for x, b in (p.inputs, p.inputs[::-1]):
            bias = view.channel_param(b, axis, n)
            if bias is not None and view.uses(x) == 1:
                edits.append(bias)
                v, p = x, view.producer(x)
                break
        else:
            return None
    if p is None:
        return None
    if p.op == "mul":
        for x, g in (p.inputs, p.inputs[::-1]):
            gamma = view.channel_param(g, axis, n)
            if gamma is not None:
                return [(name, None) for name in (*edits, gamma)]
        return None
    if p.op == "dot_general":
        oc = view.out_channel_axis(p)
        if oc is not None and oc[2] == axis and view.uses(view.g.param(oc[0])) == 1:
            return [(name, None) for name in edits] + [(oc[0], oc[1])]
    return None


@register_pass("smooth-quant", options=[
    Option("alpha", float, 0.5, "migration strength: 0 keeps activations, 1 moves all to weights",
           range=(0.0, 1.0)),
    Option("insert", bool, True, "where 1/s cannot be folded into the layer before, multiply "
           "by it explicitly (else leave that input alone)"),
    Option("check", bool, True, "smooth a layer only when its simulated W8A8 error drops "
           "(per-tensor int8 inputs, per-channel int8 weights, on a calibration sample)"),
    Option("search", bool, True, "choose alpha per input from a grid (0, 0.05, ... 1) by the "
           "simulated error of its dense layers on the calibration sample (false: use "
           "alpha everywhere)"),
    Option("mode", str, "w8a8", "what the smoothing prepares for: w8a8 (SmoothQuant: int8 "
           "per-tensor inputs, per-channel weights) or weight_only (AWQ: s = mean|x|^alpha, "
           "scored with bits-bit group-wise weights and float inputs)",
           choices=("w8a8", "weight_only")),
    Option("bits", int, 4, "mode=weight_only: weight bits", range=(2, 8)),
    Option("group_size", int, 128, "mode=weight_only: input rows per weight scale (0: one per "
           "output channel)", range=(0, None)),
], needs=("calibration",))
def smooth_quant(graph: Graph, ctx: PassContext | None = None, alpha: float = 0.5,
                 insert: bool = True, check: bool = True, search: bool = True,
                 mode: str = "w8a8", bits: int = 4, group_size: int = 128) -> Graph:
    """Move activation outliers of dense layers into their weights (SmoothQuant), exactly."""
    if ctx is None:
        raise SmoothQuantError("smooth-quant needs calibration data: compile(..., calibration=)")
    view = _View(graph)
    readers: dict[str, list[tuple[Node, str, int]]] = {}
    for node in graph.nodes:
        if node.op != "dot_general":
            continue
        for d in node.inputs:
            ax = view.weight_axes(node, d)
            if ax is not None and ax[3] == d.type.rank - 1 and view.param(d) is None:
                readers.setdefault(d.name, []).append((node, ax[0], ax[1]))
    cands = []
    for name, rs in readers.items():
        v = next(x for n, _, _ in rs for x in n.inputs if x.name == name)
        rs = [r for r in rs if view.uses(view.g.param(r[1])) == 1]  # shared weights stay
        n = v.type.shape[-1]
        if not rs or not is_float(v.type.dtype) or not isinstance(n, int):
            continue
        shared = view.uses(v) != len(rs)
        target = None if shared else _fold_target(view, v, n)
        if target is None and not insert:
            ctx.remark("missed", f"did not smooth %{v.name} for {len(rs)} dense layer(s): "
                       "nothing per-channel before it to fold 1/s into (insert=false)", rs[0][0])
            continue
        cands.append((v, rs, target, shared))
    if not cands:
        return graph
    stats, samples = _input_channel_stats(graph, ctx, [c[0] for c in cands])
    wo = (bits, group_size) if mode == "weight_only" else None
    what = f"int{bits} weight-only" if wo else "int8"
    params: dict[str, np.ndarray] = {}
    inserts = []
    for (v, rs, target, shared), xmax, sample in zip(cands, stats, samples):
        wmax = np.max([_absmax(view.param(view.g.param(w)), ax) for _, w, ax in rs], axis=0)
        ws = [(view.param(view.g.param(w)), ax) for _, w, ax in rs]
        a = alpha
        if search:
            a, _ = search_alpha(sample, xmax, wmax, ws, alpha, wo)
        s = _scales(sample, xmax, wmax, a, wo)
        if check:  # SmoothQuant can make a layer harder to quantize (its weights' rows grow)
            before = _smoothed_error(sample, xmax, ws, np.ones_like(s), wo)
            after = _smoothed_error(sample, xmax, ws, s, wo)
            if after >= 0.98 * before:
                ctx.remark("missed", f"did not smooth %{v.name}: the {what} error of its "
                           f"{len(rs)} dense layer(s) would not drop ({before:.3g} -> "
                           f"{after:.3g} on the calibration sample)", rs[0][0], value=v.name)
                continue
        for _, w, ax in rs:
            params[w] = _scale_along(view.param(view.g.param(w)), ax, s)
        how = "folded into the layer before"
        if target is None:
            inserts.append((v, [r[0] for r in rs], s))
            why = "it has other readers" if shared else "nothing per-channel makes it"
            how = f"by an inserted per-channel multiply ({why})"
        for name, ax in target or ():
            arr = view.param(view.g.param(name))
            if ax is None:  # a per-channel vector, viewed along the activation's last axis
                params[name] = (arr.astype(np.float64).reshape(-1) / s).astype(
                    arr.dtype).reshape(arr.shape)
            else:
                params[name] = _scale_along(arr, ax, s, divide=True)
        before = float(xmax.max() / max(np.median(xmax), 1e-30))
        after = float((xmax / s).max() / max(np.median(xmax / s), 1e-30))
        ctx.remark("applied", f"smoothed %{v.name} for {len(rs)} dense layer(s) {how} "
                   f"(alpha {a:.2f}; activation max/median {before:.3g} -> {after:.3g})",
                   rs[0][0], value=v.name, weights=tuple(w for _, w, _ in rs), alpha=float(a))
    out = graph.with_params(params)
    for v, readers_, s in inserts:
        out = _insert_scale(out, v, readers_, s)
    return out


def _insert_scale(graph: Graph, v: Value, readers: list[Node], s: np.ndarray) -> Graph:
    """``readers`` read ``v * (1/s)`` (along the last axis) instead of ``v``."""
    namer = graph.namer()
    pname = namer(f"{v.name}.smooth")
    inv = (1.0 / s).astype(numpy_dtype(v.type.dtype)).reshape((1,) * (v.type.rank - 1) + (-1,))
    g = graph.with_params({pname: inv})
    mul = make_node("mul", (v, g.param(pname)), namer)
    ids = {r.name for r in readers}
    nodes, placed = [], False
    if graph.producer(v) is None:
        nodes.append(mul)
        placed = True
    for n in g.nodes:
        if n.name in ids:
            n = n.replace(inputs=tuple(mul.output if x.name == v.name else x for x in n.inputs))
        nodes.append(n)
        if not placed and any(o.name == v.name for o in n.outputs):
            nodes.append(mul)
            placed = True
    return g.replace(nodes=tuple(nodes))
