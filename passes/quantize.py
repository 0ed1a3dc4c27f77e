"""quantize: fake-quant pairs on the weights and activations of dot/conv, from calibration.

Weights get scales computed from the weight (per channel, per tensor or per group);
activations (the inputs of each dot/conv) get scales from observers that see the calibration
data in one pass (``activations=per_tensor``; ``observer=auto`` picks each tensor's range by
its readers' output error), or computed at run time (``dynamic``; ``per_token``: one scale
per row of the last axis).
Fusion-aware: a ``fused.*`` composite (conv + bias + relu) is quantized at its boundaries,
its input and output and its weight, never between the ops inside it, as a deployed int8
kernel computes it. Every quantized tensor gets a ``quant`` annotation; the debugger table
(SQNR of each quantized node's output against float, scales, zero points, clipped fractions)
is the pass's data in the history, worst node first (``quant_debug.quant_report``).
"""
from __future__ import annotations

import fnmatch
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..ir import Graph, Node, Value, make_node
from ..ir.annotations import Annotation
from ..ir.ops.quant import INT_QUANT_DTYPES
from ..ir.graph import Namer
from .context import BadCalibrationData, PassContext
from .observers import SCHEMES, make_observer, params_for_range, weight_params
from .quant_debug import OutputReference, choose_float_layers, probe_sqnr
from .registry import Option, PassOptionError, register_pass

DTYPES = {"int8": ("i8", "i8"), "uint8": ("i8", "u8"), "int4": ("i4", "i8"),
          "fp8_e4m3": ("f8e4m3fn", "f8e4m3fn"), "fp8_e5m2": ("f8e5m2", "f8e5m2")}
"""option -> (weight dtype, activation dtype): uint8 keeps int8 weights (as onnxruntime's
QDQ does), int4 is weight-only-low with int8 activations (W4A8)."""

LINEAR_OPS = ("dot_general", "conv")


@dataclass
class _Target:
    """One dot/conv to quantize: where it is, its weight and its activation input."""

    node: Node                 # the dot_general / conv (top level or inside a fused body)
    composite: Node | None     # the fused.* composite holding it, if any
    weight: str | None         # the param it multiplies by
    w_axis: int | None         # the weight's output-channel axis
    k_axis: int | None         # the weight's contracting axis (for groups)
    act: Value | None          # the top-level value feeding its activation input
    act_index: int             # which input of ``node`` is the activation

    @property
    def outer(self) -> Node:
        return self.composite or self.node

    @property
    def label(self) -> str:
        return f"%{self.outer.name}"

    @property
    def op(self) -> str:
        return self.composite.attrs.get("name", "composite") if self.composite else self.node.op


@dataclass
class _Quantizer:
    """The quantization of one tensor: its parameters and what the debugger reports."""

    target: str            # param or value name
    role: str              # weight | input | output
    dtype: str
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int = 1
    block_size: int = 0
    clipped: float = 0.0
    observer: object = None
    names: dict = field(default_factory=dict)  # scale/zero-point param names
    source: str = ""  # the pass whose grid it keeps (gptq), if any


def _weight_axes(graph: Graph, node: Node):
    """(weight param, its input index, output-channel axis, contracting axis) or None."""
    if node.op == "conv":
        w = node.inputs[1]
        if w.name not in graph.params:
            return None
        rspec = node.attrs["dimension_numbers"][1]
        return w.name, 1, rspec.index("O"), rspec.index("I")
    (lc, rc), (lb, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims", ((), ()))
    for idx, (w, contract, batch) in enumerate([(node.inputs[1], rc, rb), (node.inputs[0], lc, lb)]):
        if w.name in graph.params:
            free = [d for d in range(w.type.rank) if d not in (*contract, *batch)]
            return (w.name, 1 - idx, free[0] if len(free) == 1 else None,
                    contract[0] if len(contract) == 1 else None)
    return None


def _find_targets(graph: Graph, include, exclude, ctx: PassContext) -> list[_Target]:
    targets = []
    for n in graph.nodes:
        inner, comp = [], None
        if n.op in LINEAR_OPS:
            inner = [n]
        elif n.op == "composite" and str(n.attrs.get("name", "")).startswith("fused."):
            comp = n
            inner = [m for m in n.body.nodes if m.op in LINEAR_OPS]
        for m in inner:
            found = _weight_axes(graph, m)
            if found is None:
                body = comp.body if comp is not None else graph
                if any(getattr(body.producers.get(v.name), "op", "") == "dequantize"
                       for v in m.inputs):
                    ctx.remark("missed", f"not quantized: {m.op} already reads a dequantized "
                                         "weight (a QDQ model)", m)
                else:
                    ctx.remark("missed", f"not quantized: {m.op} has no weight param "
                                         "(activations times activations)", m)
                continue
            w, widx, w_axis, k_axis = found
            keys = {m.name, w, n.name, m.loc, str(n.attrs.get("name", ""))}
            if include and not any(fnmatch.fnmatchcase(k, p) for k in keys for p in include):
                continue
            if any(fnmatch.fnmatchcase(k, p) for k in keys for p in exclude):
                ctx.remark("missed", f"not quantized: excluded (matches {list(exclude)})", n)
                continue
            aidx = 1 - widx
            act = m.inputs[aidx]
            if comp is not None:  # a body input stands for the composite's operand
                names = [v.name for v in comp.body.inputs]
                act = comp.inputs[names.index(act.name)] if act.name in names else None
            targets.append(_Target(m, comp, w, w_axis, k_axis, act, aidx))
    return targets


# Ops that keep every value on its input's quantization grid: after them the tensor is still
# quantized with the same scale, so it needs no second fake-quant.
_GRID_PRESERVING = frozenset({"reshape", "transpose", "squeeze", "expand_dims", "broadcast_in_dim",
                              "slice", "rev", "pad"})


def _grid_source(graph: Graph, v: Value) -> Value:
    """The value ``v`` is a rearrangement (reshape, max-pool ...) of: its grid's origin."""
    for _ in range(16):
        p = graph.producers.get(v.name)
        if p is None or not p.inputs or not (
                p.op in _GRID_PRESERVING or (p.op == "reduce_window" and p.attrs["kind"] in
                                             ("max", "min"))):
            return v
        if p.op == "pad" and len(p.inputs) > 1:
            return v  # a pad value off the grid would break it
        v = p.inputs[0]
    return v


def _already_quantized(graph: Graph, v: Value, quantized_outputs=frozenset()) -> bool:
    """Whether ``v`` is on a quantization grid already (a dequantize, or a fused output that
    gets its own fake-quant, possibly reshaped or max-pooled on the way)."""
    src = _grid_source(graph, v)
    p = graph.producers.get(src.name)
    return (p is not None and p.op == "dequantize") or src.name in quantized_outputs


def _weight_quantizer(graph: Graph, t: _Target, wdtype: str, weights: str, group_size: int,
                      scheme: str, observer: str, ctx: PassContext) -> _Quantizer:
    w = np.asarray(graph.params[t.weight])
    kept = _annotated_grid(graph, t.weight, w, ctx, t.outer)
    if kept is not None:
        return kept
    if weights == "group" and t.k_axis is not None and t.w_axis is not None:
        scale, zp = weight_params(w, wdtype, scheme, None, (t.k_axis, group_size), observer)
        # the blocked scale keeps every other dim: it is per channel and per group
        q = _Quantizer(t.weight, "weight", wdtype, scale, zp, t.k_axis, group_size)
    elif weights == "per_channel" and t.w_axis is not None:
        scale, zp = weight_params(w, wdtype, scheme, t.w_axis, None, observer)
        q = _Quantizer(t.weight, "weight", wdtype, scale, zp, t.w_axis)
    else:
        if weights != "per_tensor":
            ctx.remark("note", f"weight @{t.weight} {w.shape} has no single output-channel "
                               f"axis: {weights} falls back to per_tensor", t.outer)
        scale, zp = weight_params(w, wdtype, scheme, None, None, observer)
        q = _Quantizer(t.weight, "weight", wdtype, scale.reshape(()),
                       None if zp is None else zp.reshape(()))
    q.clipped = _weight_clipped(w, q)
    return q


def _annotated_grid(graph: Graph, name: str, w: np.ndarray, ctx: PassContext,
                    node: Node) -> _Quantizer | None:
    """The grid an earlier pass chose for this weight (gptq's ``quant`` annotation with its
    scales as payload), kept exactly: the weight already lies on it."""
    from ..ir.ops.quant import QUANT_DTYPES
    ann = graph.annotation(name, "quant")
    if ann is None or ann.array is None or ann.attrs.get("dtype") not in QUANT_DTYPES:
        return None
    scale = np.asarray(ann.array, np.float32)
    block = int(ann.attrs.get("block_size", 0) or 0)
    if block and scale.ndim == w.ndim:
        axes = [i for i in range(w.ndim) if scale.shape[i] == -(-w.shape[i] // block)
                and all(scale.shape[j] == w.shape[j] for j in range(w.ndim) if j != i)]
        if not axes:
            return None
        q = _Quantizer(name, "weight", ann.attrs["dtype"], scale, None, axes[0], block)
    elif scale.ndim == 1 and scale.size in w.shape:
        q = _Quantizer(name, "weight", ann.attrs["dtype"], scale, None,
                       int(ann.attrs.get("axis", w.shape.index(scale.size))))
    else:
        return None
    q.source = str(ann.attrs.get("source", "annotation"))
    ctx.remark("note", f"@{name} keeps the {q.dtype} grid {q.source} chose", node)
    return q


def _weight_clipped(w: np.ndarray, q: _Quantizer) -> float:
    """Fraction of weight entries outside the representable range."""
    from ..ir.ops.quant import quant_range
    lo, hi = quant_range(q.dtype)
    s = _expand_np(q.scale, w.shape, q.axis, q.block_size)
    z = 0.0 if q.zero_point is None else _expand_np(q.zero_point.astype(np.float64), w.shape,
                                                     q.axis, q.block_size)
    v = w / s + z
    return float(np.mean((v < lo - 0.5) | (v > hi + 0.5)))


def _expand_np(p, shape, axis, block):
    p = np.asarray(p, np.float64)
    if p.ndim == 0:
        return p
    if block:
        return np.repeat(p, block, axis=axis).take(range(shape[axis]), axis=axis)
    s = [1] * len(shape)
    s[axis] = -1
    return p.reshape(s)


def _calibrate(graph: Graph, ctx: PassContext, values: list[Value], observer: str,
               percentile: float) -> dict[str, object]:
    """Observers for ``values``, fed by one run over the calibration data."""
    batches = ctx.calibration_batches(graph)
    observers = {v.name: make_observer(observer, percentile, len(batches)) for v in values}
    probe = graph.replace(outputs=tuple(values))
    for b, outs in enumerate(ctx.run_batches(probe, batches, f"{ctx.pass_name}: calibrating")):
        for v, o in zip(values, outs):
            if not np.isfinite(o).all():
                raise BadCalibrationData(
                    f"pass '{ctx.pass_name}': %{v.name} is not finite on calibration batch {b} "
                    f"(the inputs are): the float model overflows there, no scale can be chosen")
            observers[v.name].update(o)
    return observers


def _choose_ranges(graph: Graph, targets: list[_Target], observers: dict, adtype: str,
                   scheme: str, ctx: PassContext) -> None:
    """observer=auto: each tensor keeps the candidate range (minmax, percentiles, mse,
    entropy) whose quantization error reaches its dense readers' outputs least,
    ``sum ||(Q(x) - x) @ W||²`` over a sample of rows (its own ``||Q(x) - x||²`` otherwise)."""
    readers: dict[str, list[np.ndarray]] = {}
    for t in targets:
        if t.act is None or t.node.op != "dot_general" or t.k_axis is None:
            continue
        w = np.asarray(graph.params[t.weight], np.float64)
        contract = t.node.attrs["contracting_dims"][t.act_index]
        rank = t.node.inputs[t.act_index].type.rank
        if w.ndim == 2 and tuple(contract) == (rank - 1,) and rank == t.act.type.rank:
            readers.setdefault(t.act.name, []).append(np.moveaxis(w, t.k_axis, 0))
    for name, obs in observers.items():
        ws = readers.get(name)
        if ws:
            def cost(x, xq, ws=ws):
                return sum(float(np.sum(((xq - x) @ w) ** 2)) for w in ws)
        else:
            def cost(x, xq):
                return float(np.sum((xq - x) ** 2))
        costs = obs.choose(adtype, scheme, cost)
        best = obs.chosen[0]
        node = next((t.outer for t in targets if t.act is not None and t.act.name == name),
                    None) or next(t.outer for t in targets if t.composite is not None
                                  and t.composite.output.name == name)
        ctx.remark("note", f"observer=auto: %{name} takes the {best} range "
                   f"[{obs.chosen[1]:.4g}, {obs.chosen[2]:.4g}] (error "
                   f"{costs[best] / max(costs['minmax'], 1e-300):.3g}x minmax's, "
                   f"{'reader outputs' if ws else 'the tensor itself'})", node,
                   value=name, observer=best)


def _act_quantizer(name: str, obs, adtype: str, scheme: str) -> _Quantizer:
    lo, hi = obs.clip_range(adtype, scheme)
    scale, zp = params_for_range(lo, hi, adtype, scheme)
    from ..ir.ops.quant import quant_range
    qlo, qhi = quant_range(adtype)
    z = 0.0 if zp is None else float(zp)
    # the range the codes cover: a value within half a step past the end rounds to it
    half = 0.5 if adtype in INT_QUANT_DTYPES else 0.0
    rep_lo, rep_hi = (qlo - z - half) * float(scale), (qhi - z + half) * float(scale)
    q = _Quantizer(name, "input", adtype, np.asarray(scale, np.float32), zp)
    q.clipped = obs.clipped_fraction(rep_lo, rep_hi)
    q.observer = obs
    return q


class _Emitter:
    """Builds the quantized node lists (top level and fused bodies) with fresh names."""

    def __init__(self, graph: Graph):
        self.namer = Namer(graph.value_names | set(graph.params))
        self.params: dict[str, np.ndarray] = {}

    def param(self, array, hint: str) -> Value:
        name = self.namer(hint)
        self.params[name] = np.asarray(array)
        return Value(name, _type_of(self.params[name]))

    def fake_quant(self, nodes: list, x: Value, q: _Quantizer, loc: str) -> Value:
        """quantize -> dequantize of ``x`` appended to ``nodes``; the dequantized value."""
        if "scale" not in q.names:
            q.names["scale"] = self.param(q.scale, f"{q.target}.scale").name
            # a zero point of 0 is the default: no param for it (symmetric schemes)
            if q.zero_point is not None and np.any(q.zero_point != 0):
                q.names["zero_point"] = self.param(q.zero_point, f"{q.target}.zero_point").name
        args = [Value(q.names["scale"], _type_of(self.params[q.names["scale"]]))]
        if "zero_point" in q.names:
            args.append(Value(q.names["zero_point"], _type_of(self.params[q.names["zero_point"]])))
        attrs = {"axis": q.axis, "block_size": q.block_size or None}
        qn = make_node("quantize", [x, *args], self.namer, loc=loc, dtype=q.dtype, **attrs)
        dq = make_node("dequantize", [qn.output, *args], self.namer, loc=loc,
                       dtype=x.dtype if x.dtype != args[0].dtype else None, **attrs)
        nodes += [qn, dq]
        return dq.output

    def dynamic_quant(self, nodes: list, x: Value, adtype: str, loc: str,
                      per_token: bool = False) -> Value:
        """Fake-quant of ``x`` with a symmetric scale computed at run time: one per tensor, or
        one per row of the last axis (``per_token``: a scale blocked along that whole axis)."""
        from ..ir.ops.quant import quant_range
        qmax = quant_range(adtype)[1]

        def op(name, *ins, **attrs):
            n = make_node(name, ins, self.namer, loc=loc, **attrs)
            nodes.append(n)
            return n.output
        last = x.type.rank - 1
        per_token = per_token and last >= 1 and isinstance(x.type.shape[-1], int)
        axes = (last,) if per_token else tuple(range(x.type.rank))
        amax = op("reduce_max", op("abs", x), axes=axes)
        if per_token:
            amax = op("expand_dims", amax, axes=(last,))
        f32 = op("convert", amax, dtype="f32") if amax.dtype != "f32" else amax
        scale = op("max", op("div", f32, op("constant", value=float(qmax), dtype="f32")),
                   op("constant", value=1e-12, dtype="f32"))
        blocked = {"axis": last, "block_size": x.type.shape[-1]} if per_token else {}
        q = op("quantize", x, scale, dtype=adtype, **blocked)
        return op("dequantize", q, scale, dtype=x.dtype if x.dtype != "f32" else None, **blocked)


def _type_of(a):
    from ..ir import TensorType
    return TensorType.of(a)


def _rewrite(graph: Graph, targets: list[_Target], wq: dict, aq: dict, oq: dict,
             adtype: str, dynamic: str, em: _Emitter) -> Graph:
    """The graph with fake-quant pairs inserted; output names of the targets are kept."""
    by_outer: dict[str, list[_Target]] = {}
    for t in targets:
        by_outer.setdefault(t.outer.name, []).append(t)
    subst: dict[str, Value] = {}
    nodes: list[Node] = []
    act_done: dict[str, Value] = {}
    for n in graph.nodes:
        n = n.replace(inputs=tuple(subst.get(v.name, v) for v in n.inputs)) \
            if any(v.name in subst for v in n.inputs) else n
        ts = by_outer.get(n.name, [])
        new_inputs = list(n.inputs)
        for t in ts:
            if t.act is None or t.act.type.dtype not in ("f32", "f16", "bf16", "f64"):
                continue
            key = t.act.name
            if key not in act_done:
                cur = subst.get(key, t.act)
                if key in subst:  # a fused output already fake-quantized: its codes feed on
                    act_done[key] = cur
                elif dynamic and not _already_quantized(graph, t.act):
                    per_token = dynamic == "per_token" and t.node.op == "dot_general"
                    act_done[key] = em.dynamic_quant(nodes, cur, adtype, n.loc, per_token)
                elif key in aq:
                    act_done[key] = em.fake_quant(nodes, cur, aq[key], n.loc)
                else:
                    continue
            src = t.act.name
            new_inputs = [act_done[key] if v.name == subst.get(src, t.act).name else v
                          for v in new_inputs]
        if ts:
            n = n.replace(inputs=tuple(new_inputs))
            if n.op == "composite":
                body_nodes: list[Node] = []
                for m in n.body.nodes:
                    t = next((t for t in ts if t.node.name == m.name), None)
                    if t is not None and t.weight in wq:
                        ins = list(m.inputs)
                        ins[1 - t.act_index] = em.fake_quant(
                            body_nodes, graph.param(t.weight), wq[t.weight], m.loc)
                        m = m.replace(inputs=tuple(ins))
                    body_nodes.append(m)
                n = n.replace(regions=(n.body.replace(nodes=tuple(body_nodes)),))
            else:
                t = ts[0]
                if t.weight in wq:
                    ins = list(n.inputs)
                    ins[1 - t.act_index] = em.fake_quant(nodes, graph.param(t.weight),
                                                         wq[t.weight], n.loc)
                    n = n.replace(inputs=tuple(ins))
        nodes.append(n)
        if n.name in oq:
            subst[n.output.name] = em.fake_quant(nodes, n.output, oq[n.name], n.loc)
    outputs = tuple(subst.get(v.name, v) for v in graph.outputs)
    return graph.replace(nodes=tuple(nodes), outputs=outputs,
                         params={**graph.params, **em.params})


def _scale_summary(q: _Quantizer) -> dict:
    s = np.asarray(q.scale, np.float64)
    z = None if q.zero_point is None else np.asarray(q.zero_point)
    return {"scale_min": float(s.min()), "scale_max": float(s.max()),
            "zero_point": None if z is None else (int(z.reshape(-1)[0]) if z.size == 1 or
                                                  (z == z.reshape(-1)[0]).all() else "per-channel"),
            "granularity": "blocked" if q.block_size else "per_axis" if s.ndim else "per_tensor"}


def _debug_table(graph: Graph, qgraph: Graph, targets: list[_Target], wq, aq, oq, ctx,
                 batches) -> list[dict]:
    """One row per dot/conv: SQNR of its output (float vs fake-quant model) on calibration
    data, its scales, zero points and clipped fractions; worst first."""
    outs = [t.outer.output for t in targets]
    q_outs = []
    for v in outs:  # the value downstream sees: after the output's fake-quant, if any
        users = [n for n in qgraph.nodes if n.op == "quantize" and n.inputs[0].name == v.name]
        dq = [n for n in qgraph.nodes if users and n.op == "dequantize"
              and n.inputs[0].name == users[0].output.name]
        q_outs.append(dq[0].output if dq else qgraph.producers[v.name].outputs[0])
    sqnr = probe_sqnr(ctx, graph, outs, qgraph, q_outs, batches)
    rows = []
    for i, t in enumerate(targets):
        row = {"node": t.label, "op": t.op, "weight": t.weight, "sqnr_db": round(sqnr[i], 2)}
        w = wq.get(t.weight)
        if w is not None:
            s = _scale_summary(w)
            row.update(weight_dtype=w.dtype, weight_scale=(s["scale_min"], s["scale_max"]),
                       weight_zero_point=s["zero_point"], weight_granularity=s["granularity"],
                       weight_clipped=w.clipped)
        src = None if t.act is None else _grid_source(graph, t.act).name
        a = None if t.act is None else aq.get(t.act.name) or next(
            (o for o in oq.values() if o.target == src), None)
        if a is not None:
            s = _scale_summary(a)
            row.update(input=f"%{t.act.name}", input_dtype=a.dtype, input_scale=s["scale_max"],
                       input_zero_point=s["zero_point"], input_clipped=a.clipped)
        o = oq.get(t.outer.name)
        if o is not None:
            s = _scale_summary(o)
            row.update(output_scale=s["scale_max"], output_zero_point=s["zero_point"],
                       output_clipped=o.clipped)
        rows.append(row)
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows


def _variant(graph, targets, quantized: frozenset, wq, aq, oq, adtype, dynamic):
    """(graph with only the ``quantized`` layers fake-quantized, the quantizers it used)."""
    sub = [t for t in targets if t.outer.name in quantized]
    pick = (
        {t.weight: wq[t.weight] for t in sub if t.weight in wq},
        {t.act.name: aq[t.act.name] for t in sub if t.act is not None and t.act.name in aq},
        {t.outer.name: oq[t.outer.name] for t in sub if t.outer.name in oq})
    # fresh copies: each variant names its own scale params
    wq_s, aq_s, oq_s = ({k: replace(q, names={}) for k, q in d.items()} for d in pick)
    g = _rewrite(graph, sub, wq_s, aq_s, oq_s, adtype, dynamic, _Emitter(graph))
    return g, (wq_s, aq_s, oq_s)


def _annotations(wq, aq, oq, options: dict) -> list[Annotation]:
    out = []
    for q in [*wq.values(), *aq.values(), *oq.values()]:
        s = _scale_summary(q)
        attrs = {"dtype": q.dtype, "role": q.role, "scheme": options["scheme"],
                 "granularity": s["granularity"], "scale_min": s["scale_min"],
                 "scale_max": s["scale_max"], "scale": q.names.get("scale", "")}
        if q.block_size:
            attrs["group_size"] = q.block_size
        if q.source:
            attrs["source"] = q.source
        if q.role != "weight":
            attrs["observer"] = options["observer"]
        if s["zero_point"] is not None:
            attrs["zero_point"] = str(s["zero_point"])
        out.append(Annotation(q.target, "quant", attrs))
    return out


def _check_globs(name: str):
    def check(v):
        for p in v:
            if not p:
                raise PassOptionError(f"pass 'quantize' option '{name}': an empty glob")
    return check


@register_pass("quantize", options=[
    Option("dtype", str, "int8", "quantized type", choices=tuple(DTYPES)),
    Option("weights", str, "per_channel", "weight scales", choices=("per_channel", "per_tensor",
                                                                   "group", "none")),
    Option("group_size", int, 128, "elements per group along the contracting axis (weights=group)",
           range=(1, None)),
    Option("activations", str, "per_tensor", "activation scales: calibrated per tensor, none, or "
           "computed at run time per tensor (dynamic) or per row of the last axis (per_token)",
           choices=("per_tensor", "none", "dynamic", "per_token")),
    Option("scheme", str, "symmetric", "zero point at 0 (symmetric) or fitted (affine)",
           choices=SCHEMES),
    Option("observer", str, "minmax", "how calibration picks a range (auto: per tensor, the "
           "one whose error reaches the reading layers' outputs least)",
           choices=("minmax", "percentile", "mse", "entropy", "auto")),
    Option("percentile", float, 99.99, "observer=percentile: the |x| percentile kept",
           range=(50.0, 100.0)),
    Option("include", list, (), "quantize only nodes/weights matching one of these globs",
           check=_check_globs("include")),
    Option("exclude", list, (), "never quantize nodes/weights matching these globs",
           check=_check_globs("exclude")),
    Option("debug_batches", int, 16, "calibration batches the debugger (SQNR table) runs; 0: "
           "no table", range=(0, None)),
    Option("sensitivity", bool, False, "also measure each layer's effect on the model output "
           "when it alone is quantized (one model run per layer)"),
    Option("budget", float, 0.0, "output SQNR (dB) the model must keep: the most sensitive "
           "layers stay in float until it does (0: quantize every layer)", range=(0.0, 200.0)),
    Option("sensitivity_batches", int, 0, "calibration batches the sensitivity and budget "
           "measurements run (0: as many as debug_batches)", range=(0, None)),
])
def quantize(graph: Graph, ctx: PassContext, dtype: str = "int8", weights: str = "per_channel",
             group_size: int = 128, activations: str = "per_tensor", scheme: str = "symmetric",
             observer: str = "minmax", percentile: float = 99.99, include=(), exclude=(),
             debug_batches: int = 16, sensitivity: bool = False, budget: float = 0.0,
             sensitivity_batches: int = 0) -> Graph:
    """Insert fake-quant (quantize/dequantize) on dot/conv weights and activations."""
    wdtype, adtype = DTYPES[dtype]
    if weights == "none" and activations == "none":
        raise PassOptionError("pass 'quantize': weights=none and activations=none quantize "
                              "nothing")
    targets = _find_targets(graph, include, exclude, ctx)
    if not targets:
        ctx.remark("missed", "nothing to quantize: no dot_general/conv with a weight param"
                   + (f" matches include={list(include)}" if include else ""))
        return graph
    wq: dict[str, _Quantizer] = {}
    if weights != "none":
        for t in targets:
            if t.weight not in wq:
                wq[t.weight] = _weight_quantizer(graph, t, wdtype, weights, group_size, scheme,
                                                 "mse" if observer == "mse" else "minmax", ctx)
    aq: dict[str, _Quantizer] = {}
    oq: dict[str, _Quantizer] = {}
    observed: list[Value] = []
    fused_outs = frozenset(t.composite.output.name for t in targets if t.composite is not None)
    if activations == "per_tensor":
        seen = set()
        for t in targets:
            acts = [t.act] if t.act is not None and not _already_quantized(
                graph, t.act, fused_outs - {t.act.name}) else []
            for v in acts + ([t.composite.output] if t.composite is not None else []):
                if v.name not in seen and v.type.dtype in ("f32", "f16", "bf16", "f64") \
                        and not _already_quantized(graph, v):
                    seen.add(v.name)
                    observed.append(v)
        observers = _calibrate(graph, ctx, observed, observer, percentile)
        if observer == "auto":
            _choose_ranges(graph, targets, observers, adtype, scheme, ctx)
        for t in targets:
            if t.composite is not None and t.composite.output.name in observers:
                name = t.composite.output.name
                q = _act_quantizer(name, observers[name], adtype, scheme)
                q.role = "output"
                oq[t.composite.name] = q
        outs = {t.composite.output.name for t in targets if t.composite is not None}
        for t in targets:
            if t.act is not None and t.act.name in observers and t.act.name not in outs:
                aq[t.act.name] = _act_quantizer(t.act.name, observers[t.act.name], adtype, scheme)
    dynamic = activations if activations in ("dynamic", "per_token") else ""
    every = frozenset(t.outer.name for t in targets)
    qgraph, used = _variant(graph, targets, every, wq, aq, oq, adtype, dynamic)
    kept: list[str] = []
    alone: dict[str, float] = {}
    if sensitivity or budget:
        batches = ctx.calibration_batches(graph)[:sensitivity_batches or max(debug_batches, 1)]
        start = time.perf_counter()
        ref = OutputReference(ctx, graph, batches)  # the float model runs once, not per layer
        for t in targets:  # the model's output error when this layer alone is quantized
            only = _variant(graph, targets, frozenset({t.outer.name}), wq, aq, oq, adtype,
                            dynamic)[0]
            alone[t.outer.name] = ref.sqnr(only)
        full = ref.sqnr(qgraph)
        ctx.pass_data["output_sqnr_db"] = round(full, 2)
        ctx.pass_data["sensitivity"] = {  # most sensitive first
            "batches": len(batches), "seconds": round(time.perf_counter() - start, 2),
            "alone_output_sqnr_db": {
                f"%{k}": round(v, 2) for k, v in sorted(alone.items(), key=lambda kv: kv[1])}}
        if budget:
            kept, db, steps = choose_float_layers(
                list(every), alone,
                lambda keep: _variant(graph, targets, every - keep, wq, aq, oq, adtype,
                                      dynamic)[0],
                ref.sqnr, budget, full)
            qgraph, used = _variant(graph, targets, every - frozenset(kept), wq, aq, oq,
                                    adtype, dynamic)
            ctx.pass_data["mixed_precision"] = {
                "budget_db": budget, "output_sqnr_db": round(db, 2), "met": db >= budget,
                "float_layers": [f"%{k}" for k in kept], "steps": steps}
            if db < budget:
                ctx.remark("missed", f"output SQNR {db:.1f} dB misses the budget of {budget} dB "
                                     "even with every layer in float")
    options = {"scheme": scheme, "observer": observer}
    qgraph = qgraph.with_annotations(add=_annotations(*used, options))
    for t in targets:
        if t.outer.name in kept:
            ctx.remark("applied", f"kept {t.op} in float: quantized alone it leaves the output "
                                  f"{alone[t.outer.name]:.1f} dB (budget {budget} dB)", t.outer)
            continue
        what = ", ".join(x for x, on in [("weight", t.weight in wq),
                                         ("input", t.act is not None and (t.act.name in aq or
                                                                          dynamic)),
                                         ("output", t.outer.name in oq)] if on)
        ctx.remark("applied", f"quantized {t.op} ({what}) to {dtype}", t.outer)
    rows = []
    if debug_batches and ctx.calibration and ctx.executor is not None:
        rows = _debug_table(graph, qgraph, targets, *used, ctx,
                            ctx.calibration_batches(graph)[:debug_batches])
        for r in rows:
            name = r["node"][1:]
            r["quantized"] = name not in kept
            if name in alone:
                r["alone_output_sqnr_db"] = round(alone[name], 2)
    ctx.pass_data["quant_report"] = rows
    outer = {t.label: t.outer for t in targets}
    for r in rows:  # worst first: the report charts numeric remark data per layer
        nums = {k: float(r[k]) for k in ("sqnr_db", "alone_output_sqnr_db", "weight_clipped",
                                          "input_clipped", "output_clipped")
                if k in r and math.isfinite(r[k])}
        ctx.remark("note", f"SQNR {r['sqnr_db']:.1f} dB against float ({r['op']})",
                   outer[r["node"]], layer=r["node"], **nums)
    ctx.pass_data["options"] = {"dtype": dtype, "weights": weights, "activations": activations,
                                "scheme": scheme, "observer": observer}
    return qgraph
