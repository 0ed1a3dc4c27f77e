"""bias-correction: AIMET's empirical bias correction of fake-quantized dot/conv layers.

Quantization error is not zero-mean: rounding a weight matrix shifts every output channel's
expected value by ``E[y_q - y]``. For each quantized dot/conv (its weight read through a
quantize -> dequantize pair), in graph order, this pass measures that shift per output channel
on calibration data (the quantized model, corrections of the layers before it in force, against
the float model: the same graph with its fake-quant pairs removed) and subtracts it from the
layer's bias. A layer without a bias gets one when the shift is not negligible. Run it after
``quantize``; one pass over the data for the float means, then one per layer.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value, make_node
from ..ir.graph import Namer
from .context import PassContext
from .registry import Option, register_pass

LINEAR_OPS = ("dot_general", "conv")


def _dq_source(producers: dict, v: Value) -> Value | None:
    """The float value ``v`` fake-quantizes (``v = dequantize(quantize(x))``), else None."""
    dq = producers.get(v.name)
    if dq is None or dq.op != "dequantize":
        return None
    q = producers.get(dq.inputs[0].name)
    return q.inputs[0] if q is not None and q.op == "quantize" else None


def _flatten(graph: Graph, strip: bool) -> Graph:
    """``graph`` with every composite inlined (inner value names kept, so a layer's output can
    be read) and, when ``strip``, every quantize -> dequantize pair replaced by its input: the
    float twin of a fake-quantized model."""
    nodes: list[Node] = []
    producers: dict[str, Node] = {}

    def emit(body_nodes, local: dict):
        for n in body_nodes:
            ins = tuple(local.get(v.name, v) for v in n.inputs)
            if n.op == "composite":
                inner = dict(local)
                inner.update({b.name: o for b, o in zip(n.body.inputs, ins)})
                emit(n.body.nodes, inner)
                for o, r in zip(n.outputs, n.body.outputs):
                    local[o.name] = inner.get(r.name, r)
                continue
            m = n.replace(inputs=ins)
            if strip and n.op == "dequantize":
                q = producers.get(ins[0].name)
                if q is not None and q.op == "quantize":
                    local[n.output.name] = q.inputs[0]
                    continue
            nodes.append(m)
            for o in m.outputs:
                producers[o.name] = m

    top: dict[str, Value] = {}
    emit(graph.nodes, top)
    outputs = tuple(top.get(v.name, v) for v in graph.outputs)
    return graph.replace(nodes=tuple(nodes), outputs=outputs, annotations=())


class _Layer:
    """One quantized dot/conv: where it is, its output-channel axis and its bias (if any)."""

    def __init__(self, node: Node, composite: Node | None, weight: str, axis: int):
        self.node, self.composite, self.weight, self.axis = node, composite, weight, axis
        self.bias: str | None = None   # the param added to its output, per channel
        self.bias_shape: tuple = ()

    @property
    def label(self) -> str:
        return f"%{(self.composite or self.node).name}"


def _out_axis(node: Node, weight_index: int) -> int | None:
    """The output axis holding the weight's output channels (None: not a single one)."""
    if node.op == "conv":
        return node.attrs["dimension_numbers"][2].index("C") if weight_index == 1 else None
    if weight_index != 1:
        return None
    w = node.inputs[1]
    (_, rc), (_, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims", ((), ()))
    free = [d for d in range(w.type.rank) if d not in (*rc, *rb)]
    return node.output.type.rank - 1 if len(free) == 1 else None


def _channel_param(graph: Graph, producers: dict, outer: dict, v: Value, rank: int,
                   axis: int) -> str | None:
    """The param ``v`` is, per output channel (directly or through broadcast_in_dim)."""
    v = outer.get(v.name, v)
    p = producers.get(v.name)
    if p is not None and p.op == "broadcast_in_dim" and p.inputs[0].name in graph.params:
        if sum(1 for n in graph.nodes for u in n.inputs if u.name == v.name) != 1:
            return None  # the broadcast bias is shared: correcting it would move another layer
        src = p.inputs[0]
        dims = p.attrs["broadcast_dimensions"]
        arr = graph.params[src.name]
        if arr.ndim == 1 and tuple(dims) == (axis,):
            return src.name
        return None
    if v.name not in graph.params:
        return None
    shape = graph.params[v.name].shape
    if len(shape) > rank:
        return None
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if all(d == 1 for i, d in enumerate(full) if i != axis):
        return v.name
    return None


def _find_layers(graph: Graph, ctx: PassContext) -> list[_Layer]:
    layers = []
    top_producers = {o.name: n for n in graph.nodes for o in n.outputs}
    for n in graph.nodes:
        scopes = [(n.body, n)] if n.op == "composite" else []
        body_nodes = n.body.nodes if scopes else [n]
        prods = {o.name: m for m in body_nodes for o in m.outputs} if scopes else top_producers
        for m in body_nodes:
            if m.op not in LINEAR_OPS:
                continue
            src = next(((i, s) for i, v in enumerate(m.inputs[:2])
                        if (s := _dq_source(prods, v)) is not None and s.name in graph.params),
                       None)
            if src is None:
                continue
            axis = _out_axis(m, src[0])
            if axis is None:
                ctx.remark("missed", f"no bias correction: the weight @{src[1].name} of {m.op} "
                                     "has no single output-channel axis", n)
                continue
            layer = _Layer(m, n if scopes else None, src[1].name, axis)
            body = n.body if scopes else graph
            users = [u for u in body.nodes if any(v.name == m.output.name for v in u.inputs)]
            outer = ({b.name: o for b, o in zip(n.body.inputs, n.inputs)} if scopes else {})
            if len(users) == 1 and users[0].op == "add":
                other = next(v for v in users[0].inputs if v.name != m.output.name)
                name = _channel_param(graph, top_producers, outer, other,
                                      m.output.type.rank, axis)
                if name is not None and _reads(graph, name) == 1:
                    layer.bias = name
                    layer.bias_shape = graph.params[name].shape
            layers.append(layer)
    return layers


def _reads(graph: Graph, name: str) -> int:
    """How many nodes (anywhere, bodies included) read param ``name``."""
    return sum(1 for n in graph.walk() for v in n.inputs if v.name == name)


def _channel_means(ctx: PassContext, graph: Graph, values: list[Value], axes: list[int],
                   batches, desc: str) -> tuple[list[np.ndarray], list[float]]:
    """Per-channel means and overall RMS of ``values`` over the batches (sums kept, never
    the activations)."""
    probe = graph.replace(outputs=tuple(values))
    sums: list = [None] * len(values)
    counts = [0] * len(values)
    squares = np.zeros(len(values))
    for outs in ctx.run_batches(probe, batches, desc):
        for i, (o, ax) in enumerate(zip(outs, axes)):
            o = np.asarray(o, np.float64)
            s = o.sum(axis=tuple(d for d in range(o.ndim) if d != ax))
            sums[i] = s if sums[i] is None else sums[i] + s
            counts[i] += o.size // o.shape[ax]
            squares[i] += float(np.sum(o * o))
    sizes = [c * len(s) for c, s in zip(counts, sums)]
    return ([s / c for s, c in zip(sums, counts)],
            [float(np.sqrt(q / max(n, 1))) for q, n in zip(squares, sizes)])


def _insert_bias(graph: Graph, layer: _Layer, array: np.ndarray, namer: Namer) -> Graph:
    """``graph`` with ``add(layer output, @new bias)`` right after the layer (same body), the
    layer's users reading the sum under the layer's old output name."""
    m = layer.node
    pname = namer(f"{layer.weight}/bias_correction")
    pval = Value(pname, _type_of(array))
    fresh = Value(namer(), m.output.type)
    moved = m.replace(outputs=(fresh,))
    add = make_node("add", [fresh, pval], namer, loc=m.loc, names=None)
    add = add.replace(outputs=(m.output,))  # users keep reading the old name

    def patch(nodes):
        out = []
        for n in nodes:
            if n is m:
                out += [moved, add]
            else:
                out.append(n)
        return tuple(out)

    if layer.composite is None:
        g = graph.replace(nodes=patch(graph.nodes))
    else:
        c = layer.composite
        new_c = c.replace(regions=(c.body.replace(nodes=patch(c.body.nodes)), *c.regions[1:]))
        g = graph.replace(nodes=tuple(new_c if n is c else n for n in graph.nodes))
        layer.composite = new_c
    layer.node = moved
    layer.bias, layer.bias_shape = pname, array.shape
    return g.with_params({pname: array})


def _type_of(a):
    from ..ir import TensorType
    return TensorType.of(a)


@register_pass("bias-correction", options=[
    Option("batches", int, 16, "calibration batches each measurement runs", range=(1, None)),
    Option("min_relative", float, 1e-3, "a layer without a bias gets one only when its largest "
           "shift is at least this fraction of its output's RMS", range=(0.0, None)),
], needs=("calibration",))
def bias_correction(graph: Graph, ctx: PassContext, batches: int = 16,
                    min_relative: float = 1e-3) -> Graph:
    """Subtract each quantized dot/conv's mean output error E[y_q - y] from its bias."""
    layers = _find_layers(graph, ctx)
    if not layers:
        ctx.remark("missed", "no bias correction: no dot/conv reads a fake-quantized weight "
                             "param (run quantize first)")
        return graph
    data = ctx.calibration_batches(graph)[:batches]
    float_g = _flatten(graph, strip=True)
    vals = [l.node.output for l in layers]
    axes = [l.axis for l in layers]
    f_means, f_rms = _channel_means(ctx, float_g, vals, axes, data, "bias-correction: float model")
    namer = Namer(graph.value_names | set(graph.params))
    rows = []
    for layer, fm, rms in zip(layers, f_means, f_rms):
        q_g = _flatten(graph, strip=False)
        qm = _channel_means(ctx, q_g, [layer.node.output], [layer.axis], data,
                            f"bias-correction: {layer.label}")[0][0]
        shift = qm - fm
        biggest = float(np.max(np.abs(shift)))
        rel = biggest / rms if rms > 0 else 0.0
        if layer.bias is not None:
            old = np.asarray(graph.params[layer.bias])
            new = (old.astype(np.float64) - shift.reshape(old.shape)).astype(old.dtype)
            graph = graph.with_params({layer.bias: new})
            added = False
        elif rel >= min_relative and biggest > 0:
            out_dtype = layer.node.output.type.dtype
            from ..ir.types import numpy_dtype
            arr = (-shift).astype(numpy_dtype(out_dtype))
            shape = [1] * layer.node.output.type.rank
            shape[layer.axis] = -1
            graph = _insert_bias(graph, layer, arr.reshape(shape), namer)
            added = True
        else:
            ctx.remark("missed", f"no bias correction for {layer.node.op}: it has no bias and "
                                 f"its mean shift ({rel:.2e} of its output RMS) is negligible",
                       layer.composite or layer.node)
            continue
        rows.append({"node": layer.label, "weight": layer.weight, "bias": layer.bias,
                     "added_bias": added, "max_abs_shift": biggest,
                     "mean_abs_shift": float(np.mean(np.abs(shift))), "relative_to_rms": rel})
        ctx.remark("applied", f"bias correction on {layer.node.op}: subtracted E[y_q - y] per "
                              f"channel from @{layer.bias}{' (a new bias)' if added else ''}, "
                              f"max |shift| {biggest:.3g} ({100 * rel:.2f}% of the output RMS)",
                   layer.composite or layer.node, layer=layer.label, max_abs_shift=biggest,
                   relative_to_rms=rel)
    ctx.pass_data["corrections"] = rows
    return graph
