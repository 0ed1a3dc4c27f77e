"""Control flow: If, Loop and Scan as cond / while_loop / scan nodes with regions.

A body's converted region takes its own inputs followed by the outer values it reads
(``ctx.subgraph``); the IR ops want every region to take the same operand list, so the
helpers below line regions up (adding unused inputs) and add the bookkeeping nodes (the
loop counter, the loop condition) that ONNX leaves implicit.
"""
from __future__ import annotations

import numpy as np

from ....ir import Graph, TensorType, Value, make_node
from ..errors import NeedsKnownValue, Unsupported
from ..registry import onnx_op
from ._util import norm_axis

SCALAR_I64 = TensorType((), "i64")
SCALAR_BOOL = TensorType((), "bool")


def _align(ctx, region: Graph, n_own: int, captured, operands) -> Graph:
    """``region`` taking ``operands`` (after its ``n_own`` own inputs) instead of only the
    outer values it captured; inputs for operands it does not read are fresh and unused."""
    own, mine = list(region.inputs[:n_own]), dict(zip((v.name for v in captured), region.inputs[n_own:]))
    extra = [mine.get(o.name) or Value(ctx.scope.namer(f"{o.name}_unused"), o.type) for o in operands]
    return region.replace(inputs=tuple(own + extra))


def _union(*lists):
    seen, out = set(), []
    for lst in lists:
        for v in lst:
            if v.name not in seen:
                seen.add(v.name)
                out.append(v)
    return out


def _node(ctx, op, *inputs, **attrs) -> Value:
    """A node for a region under construction (not emitted into the current scope)."""
    return make_node(op, inputs, ctx.scope.namer, loc=ctx.loc, **attrs)


def _inline(ctx, region: Graph, outer: list[Value]) -> list[Value]:
    """Emit ``region``'s nodes in the current scope with its inputs bound to ``outer``."""
    env = {r.name: o for r, o in zip(region.inputs, outer)}

    def sub(v: Value) -> Value:
        return env.get(v.name, v)
    for n in region.nodes:
        ctx.scope.emit(n.replace(inputs=tuple(sub(v) for v in n.inputs)))
    return [sub(v) for v in region.outputs]


# --- If -------------------------------------------------------------------------------------------
@onnx_op("If")
def _if(ctx, cond):
    then_g, else_g = ctx.attr("then_branch"), ctx.attr("else_branch")
    known = ctx.known(cond)
    if known is not None:  # a static branch: inline it
        region, captured = ctx.subgraph(then_g if bool(np.asarray(known).reshape(())) else else_g,
                                        [], "branch")
        return _inline(ctx, region, list(captured))
    then_r, then_c = ctx.subgraph(then_g, [], "then")
    else_r, else_c = ctx.subgraph(else_g, [], "else")
    operands = _union(then_c, else_c)
    t = [v.type for v in then_r.outputs]
    e = [v.type for v in else_r.outputs]
    if len(t) != len(e) or any(a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape) for a, b in zip(t, e)):
        if ctx.scope.input_deps(cond):  # specialize to the condition's value (compiled models do)
            ctx.require_known(cond, f"If condition (its branches give different types: then "
                                    f"{[str(x) for x in t]}, else {[str(x) for x in e]})")
        ctx.unsupported(f"branches give different types: then {[str(x) for x in t]}, "
                        f"else {[str(x) for x in e]}")
    pred = ctx.convert(ctx.reshape(cond, ()), "bool")
    out = ctx.op("cond", pred, *operands,
                 regions=[_align(ctx, then_r, 0, then_c, operands), _align(ctx, else_r, 0, else_c, operands)])
    return out if isinstance(out, tuple) else [out]


# --- Loop -----------------------------------------------------------------------------------------
def _passes_cond_through(body: Graph) -> bool:
    """Whether the body's cond output is its cond input (the loop runs all its trips)."""
    return body.outputs[0].name == body.inputs[1].name


MAX_UNROLL = 64  # loops with a static trip count up to this may be unrolled


@onnx_op("Loop")
def _loop(ctx, max_trips=None, cond=None, *initial):
    initial = list(initial)
    if any(v is None for v in initial):
        ctx.unsupported("loop-carried values must be tensors")
    trips = None if max_trips is None else ctx.known(max_trips)
    start = np.asarray(True) if cond is None else ctx.known(cond)
    if len(ctx.attr("body").output) > 1 + len(initial):
        # stacked per-iteration (scan) outputs need a static trip count
        if trips is None:
            trips = ctx.require_known(max_trips, "Loop trip count M (the loop has scan outputs)")
        if start is None:
            start = ctx.require_known(cond, "Loop condition (the loop has scan outputs)")
    if trips is None or start is None or int(np.asarray(trips).reshape(())) > MAX_UNROLL:
        return _loop_as_region(ctx, max_trips, cond, initial)
    # a short static loop: try a region first, unroll when the body only converts with a
    # known iteration number (a Slice at the counter...)
    with _rollback(ctx) as attempt:
        outs = _loop_as_region(ctx, max_trips, cond, initial)
    if attempt.ok:
        return outs
    return unroll_loop(ctx, int(np.asarray(trips).reshape(())), bool(np.asarray(start).reshape(())), initial)


class _rollback:
    """Run a conversion attempt; on failure forget the problems it reported."""

    def __init__(self, ctx):
        self.imp, self.ok = ctx.scope.imp, False
        self.start = len(ctx.scope.nodes)
        self.scope = ctx.scope

    def __enter__(self):
        imp = self.imp
        self.saved = (len(imp.problems), len(imp.need_nodes), set(imp.needed))
        return self

    def __exit__(self, kind, exc, tb):
        from ..converter import _Reported
        if kind is None:
            self.ok = True
            return False
        if not issubclass(kind, (Unsupported, NeedsKnownValue, _Reported)):
            return False
        imp = self.imp
        del imp.problems[self.saved[0]:]
        del imp.need_nodes[self.saved[1]:]
        imp.needed.clear()
        imp.needed.update(self.saved[2])
        del self.scope.nodes[self.start:]
        return True


def unroll_loop(ctx, trips: int, start: bool, initial):
    """The loop body converted once per iteration, with the counter known each time."""
    from ..converter import Scope, _Reported
    body_g = ctx.attr("body")
    imp = ctx.scope.imp
    carried = [ctx.known(v) if ctx.known(v) is not None else v for v in initial]
    scans: list[list] = []
    keep_going = start
    for k in range(trips):
        if not keep_going:
            break
        sub = Scope(imp, ctx.scope.opsets, parent=ctx.scope)
        names = [vi.name for vi in body_g.input]
        sub.known[names[0]] = np.asarray(k, np.int64)
        sub.known[names[1]] = np.asarray(True)
        for name, v in zip(names[2:], carried):
            if isinstance(v, np.ndarray):
                sub.known[name] = v
            else:
                sub.values[name] = v
        for t in body_g.initializer:
            sub.add_initializer(t)
        before = len(imp.problems) + len(imp.need_nodes)
        sub.convert_nodes(body_g.node)
        if len(imp.problems) + len(imp.need_nodes) > before:
            raise _Reported()
        outs = []
        for o in body_g.output:
            arr = sub.known_value(o.name)
            outs.append(arr if arr is not None else sub.value(o.name))
        env = {i.name: c for i, c in zip(sub.inputs, sub.captured)}
        for n in sub.nodes:
            ctx.scope.emit(n.replace(inputs=tuple(env.get(v.name, v) for v in n.inputs)))
        outs = [o if isinstance(o, np.ndarray) else env.get(o.name, o) for o in outs]
        cond_out = outs[0]
        if not isinstance(cond_out, np.ndarray):
            ctx.unsupported("the loop condition is computed at run time; the loop cannot be unrolled")
        keep_going = bool(np.asarray(cond_out).reshape(()))
        carried = outs[1:1 + len(initial)]
        scans.append(outs[1 + len(initial):])
    results = [ctx.const(c) if isinstance(c, np.ndarray) else c for c in carried]
    n_scan = len(body_g.output) - 1 - len(initial)
    for j in range(n_scan):
        vals = [ctx.const(it[j]) if isinstance(it[j], np.ndarray) else it[j] for it in scans]
        if not vals:
            ctx.unsupported("a loop that runs no iteration has scan outputs of unknown shape")
        vals = [ctx.op("expand_dims", v, axes=(0,)) for v in vals]
        results.append(vals[0] if len(vals) == 1 else ctx.op("concatenate", *vals, axis=0))
    return results


def _loop_as_region(ctx, max_trips, cond, initial):
    body_g = ctx.attr("body")
    carried = [v.type for v in initial]
    body, captured = ctx.subgraph(body_g, [SCALAR_I64, SCALAR_BOOL] + carried, "loop_body")
    n = len(initial)
    n_scan = len(body.outputs) - 1 - n
    if n_scan < 0:
        ctx.unsupported(f"body gives {len(body.outputs)} outputs for {n} loop-carried values")
    for t, o in zip(carried, body.outputs[1:1 + n]):
        if o.type.dtype != t.dtype or tuple(o.type.shape) != tuple(t.shape):
            ctx.unsupported(f"loop-carried value changes type across iterations ({t} -> {o.type})")
    # cond_out as a scalar bool
    if body.outputs[0].type.rank:
        r = _node(ctx, "reshape", body.outputs[0], shape=())
        body = body.replace(nodes=body.nodes + (r,), outputs=(r.output,) + body.outputs[1:])
    trips = None if max_trips is None else ctx.known(max_trips)
    start = ctx.known(cond) if cond is not None else np.asarray(True)
    if n_scan:
        # stacked per-iteration outputs need a static trip count: every trip must run
        if trips is None:
            trips = ctx.require_known(max_trips, "Loop trip count M (the loop has scan outputs)")
        if start is None:
            start = ctx.require_known(cond, "Loop condition (the loop has scan outputs)")
        if not _passes_cond_through(body) and not _known_true(ctx, body.outputs[0]):
            ctx.unsupported("a loop with scan outputs whose condition changes has a dynamic "
                            "number of iterations")
        length = int(np.asarray(trips).reshape(())) if bool(np.asarray(start).reshape(())) else 0
        return _loop_as_scan(ctx, body, captured, initial, length)
    return _loop_as_while(ctx, body, captured, initial, max_trips, cond)


def _known_true(ctx, v: Value) -> bool:
    k = ctx.known(v)
    return k is not None and bool(np.all(k))


def _loop_as_scan(ctx, body, captured, initial, length: int):
    one = make_node("constant", (), ctx.scope.namer, value=1, dtype="i64")
    nxt = make_node("add", (body.inputs[0], one.output), ctx.scope.namer, loc=ctx.loc)
    n = len(initial)
    # carry: (counter, cond, loop-carried...); the remaining outputs are stacked
    region = body.replace(nodes=body.nodes + (one, nxt), outputs=(nxt.output,) + body.outputs)
    i0 = ctx.scalar(0, "i64")
    c0 = ctx.scalar(True, "bool")
    outs = ctx.op("scan", i0, c0, *initial, *captured, regions=[region], num_carry=2 + n, num_xs=0,
                  length=length)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    return outs[2:]


def _loop_as_while(ctx, body, captured, initial, max_trips, cond):
    n = len(initial)
    invariants = list(captured)
    if max_trips is not None:
        invariants.append(ctx.convert(ctx.reshape(max_trips, ()), "i64"))
    one = make_node("constant", (), ctx.scope.namer, value=1, dtype="i64")
    nxt = make_node("add", (body.inputs[0], one.output), ctx.scope.namer, loc=ctx.loc)
    body_inputs = list(body.inputs) + ([Value(ctx.scope.namer("max_trips_unused"), SCALAR_I64)]
                                       if max_trips is not None else [])
    body_r = body.replace(inputs=tuple(body_inputs), nodes=body.nodes + (one, nxt),
                          outputs=(nxt.output,) + body.outputs[:1 + n])
    # cond region: keep going while i < M and cond
    cin = [Value(ctx.scope.namer("w"), v.type) for v in body_inputs]
    nodes = []
    keep = cin[1]
    if max_trips is not None:
        lt = make_node("lt", (cin[0], cin[-1]), ctx.scope.namer, loc=ctx.loc)
        both = make_node("and", (lt.output, keep), ctx.scope.namer, loc=ctx.loc)
        nodes += [lt, both]
        keep = both.output
    cond_r = Graph("loop_cond", cin, (keep,), nodes, {})
    c0 = ctx.scalar(True, "bool") if cond is None else ctx.convert(ctx.reshape(cond, ()), "bool")
    outs = ctx.op("while_loop", ctx.scalar(0, "i64"), c0, *initial, *invariants,
                  regions=[cond_r, body_r], num_carry=2 + n)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    return outs[2:]


# --- Scan -----------------------------------------------------------------------------------------
def _move_axis(ctx, x, src: int, dst: int):
    if src == dst:
        return x
    perm = list(range(x.type.rank))
    perm.insert(dst, perm.pop(src))
    return ctx.op("transpose", x, permutation=tuple(perm))


def scan_body(ctx, states, xs, directions, body_g):
    """Run ONNX Scan semantics (opset 9+) on time-major ``xs``; (final states, stacked outputs)."""
    xs = [ctx.op("rev", x, axes=(0,)) if d else x for x, d in zip(xs, directions)]
    lengths = {x.shape[0] for x in xs}
    if len(lengths) != 1 or not isinstance(next(iter(lengths)), int):
        ctx.unsupported(f"scan inputs need one static length, got {sorted(map(str, lengths))}")
    length = lengths.pop()
    slices = [x.type.with_shape(x.shape[1:]) for x in xs]
    body, captured = ctx.subgraph(body_g, [s.type for s in states] + slices, "scan_body")
    outs = ctx.op("scan", *states, *xs, *captured, regions=[body], num_carry=len(states),
                  num_xs=len(xs), length=length)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    return outs[:len(states)], outs[len(states):]


@onnx_op("Scan", since=9)
def _scan(ctx, *inputs):
    m = int(ctx.attr("num_scan_inputs"))
    states, xs = list(inputs[:len(inputs) - m]), list(inputs[len(inputs) - m:])
    in_axes = ctx.attr("scan_input_axes", (0,) * m)
    in_dirs = ctx.attr("scan_input_directions", (0,) * m)
    xs = [_move_axis(ctx, x, norm_axis(a, x.type.rank), 0) for x, a in zip(xs, in_axes)]
    finals, ys = scan_body(ctx, states, xs, in_dirs, ctx.attr("body"))
    out_axes = ctx.attr("scan_output_axes", (0,) * len(ys))
    out_dirs = ctx.attr("scan_output_directions", (0,) * len(ys))
    result = []
    for y, a, d in zip(ys, out_axes, out_dirs):
        if d:
            y = ctx.op("rev", y, axes=(0,))
        result.append(_move_axis(ctx, y, 0, norm_axis(a, y.type.rank)))
    return finals + result


@onnx_op("Scan", since=8)
def _scan_v8(ctx, seq_lens, *inputs):
    """Scan-8: batch-major ([B, T, ...]) inputs; each batch row is scanned on its own."""
    if seq_lens is not None:
        lens = ctx.known(seq_lens)
        if lens is None or len(set(np.asarray(lens).reshape(-1).tolist())) > 1:
            ctx.unsupported("per-row sequence_lens are not supported")
    m = int(ctx.attr("num_scan_inputs"))
    states, xs = list(inputs[:len(inputs) - m]), list(inputs[len(inputs) - m:])
    dirs = ctx.attr("directions", (0,) * m)
    batch = xs[0].shape[0] if xs else states[0].shape[0]
    if not isinstance(batch, int):
        ctx.unsupported("Scan-8 needs a static batch size")
    rows_final, rows_ys = [], []
    for b in range(batch):
        def row(v):
            start = (b,) + (0,) * (v.type.rank - 1)
            limit = (b + 1,) + tuple(v.shape[1:])
            return ctx.reshape(ctx.op("slice", v, start=start, limit=limit), tuple(v.shape[1:]))
        finals, ys = scan_body(ctx, [row(s) for s in states], [row(x) for x in xs], dirs,
                               ctx.attr("body"))
        rows_final.append(finals)
        rows_ys.append(ys)

    def stack(vals):
        vals = [ctx.op("expand_dims", v, axes=(0,)) for v in vals]
        return vals[0] if len(vals) == 1 else ctx.op("concatenate", *vals, axis=0)
    return [stack(list(col)) for col in zip(*rows_final)] + [stack(list(col)) for col in zip(*rows_ys)]
