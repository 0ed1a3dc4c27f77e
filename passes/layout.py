"""layout: convolution regions in NHWC (or NCHW) with weights stored in the kernel's layout.

Each conv not yet in the target layout becomes ``T_in -> conv' -> T_out``: its weight is
re-laid-out once, on the numpy array (a new param; the old one is dropped when unused), so the
compiled program never transposes a weight (XLA cannot fold a transpose of an argument; see
issue 16). The ``T_out`` transposes then sink through layout-agnostic ops (element-wise,
batch-norm, pools, reductions, pads, slices, concats, channel-splitting reshapes) and cancel
against the next conv's ``T_in``, so activation transposes stay only at region boundaries.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..ir import Graph, Node, TensorType, Value
from ..ir.registry import OPS
from ..ir.types import dims_equal, numpy_dtype
from .canonicalize import drop_identity_op, merge_reshapes, merge_transposes
from .context import PassContext
from .registry import Option, register_pass
from .rewrite import Rewriter, apply_patterns, pattern

FORMATS = ("NHWC", "NCHW", "auto")


# --- permutations ----------------------------------------------------------------------------
def _inverse(perm) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _permute(values, perm) -> tuple:
    """Per-dim attribute of ``transpose(x, perm)`` re-indexed for ``x``: new[perm[i]] = old[i]."""
    out = [None] * len(perm)
    for i, p in enumerate(perm):
        out[p] = values[i]
    return tuple(out)


def _unit(d) -> bool:
    return isinstance(d, int) and d == 1


def _moves_only_units(shape, perm) -> bool:
    """``transpose(x, perm)`` keeps the order of x's non-unit dims: it is a reshape."""
    order = [p for p in perm if not _unit(shape[p])]
    return order == sorted(order)


# --- target layouts --------------------------------------------------------------------------
def target_specs(dn, fmt: str) -> tuple[str, str, str]:
    """The (lhs, rhs, out) layouts of a conv with ``dimension_numbers`` dn in format ``fmt``."""
    lspec, rspec, ospec = dn
    lsp = "".join(c for c in lspec if c not in "NC")
    rsp = "".join(c for c in rspec if c not in "OI")
    osp = "".join(c for c in ospec if c not in "NC")
    if fmt == "NHWC":
        return "N" + lsp + "C", rsp + "IO", "N" + osp + "C"
    return "NC" + lsp, "OI" + rsp, "NC" + osp


def _spec_perm(src: str, dst: str) -> tuple[int, ...]:
    """The permutation taking a tensor laid out as ``src`` to ``dst``."""
    return tuple(src.index(c) for c in dst)


# --- constants -------------------------------------------------------------------------------
def _constant_like(rw: Rewriter, v: Value, depth: int = 6) -> bool:
    """``v`` is computed from params and literals only (no graph input)."""
    if rw.is_param(v):
        return True
    n = rw.producer(v)
    if n is None or n.regions or depth == 0:
        return False
    return n.op in ("constant", "iota") or (
        bool(n.inputs) and all(_constant_like(rw, x, depth - 1) for x in n.inputs))


def relaid_param(rw: Rewriter, name: str, perm, hint: str) -> Value:
    """Param ``name`` transposed by ``perm`` at pass time, as a new param (cached per sweep);
    its annotations move with it (a payload of its shape transposed, an ``axis`` renumbered)."""
    cache = rw.state.setdefault("relaid", {})
    key = (name, tuple(perm))
    if key not in cache:
        arr = rw.params[name]
        if getattr(arr, "abstract", False):  # declared in text, not loaded: keep it abstract
            new = np.broadcast_to(np.zeros((), arr.dtype),
                                  tuple(arr.shape[p] for p in perm)).view(type(arr))
            new.note = getattr(arr, "note", "not loaded")
        else:
            new = np.ascontiguousarray(np.transpose(arr, perm))
        cache[key] = rw.add_param(new, hint)
        for a in rw.annotations(name):  # a mask or per-channel quant params follow the weight
            array = a.array
            if array is not None and array.shape == arr.shape:
                array = np.ascontiguousarray(np.transpose(array, perm))
            attrs = dict(a.attrs)
            if isinstance(attrs.get("axis"), int):
                attrs["axis"] = tuple(perm).index(attrs["axis"] % len(perm))
            rw.annotate(cache[key], a.kind, attrs, array)
    return cache[key]


def _relayout(rw: Rewriter, c: Value, perm, rank: int, loc: str) -> Value:
    """Constant ``c`` (broadcasting against a rank-``rank`` value laid out as ``transpose(a, perm)``)
    re-laid-out to broadcast against ``a`` instead."""
    shape = (1,) * (rank - c.type.rank) + tuple(c.type.shape)
    if all(_unit(d) for d in shape):
        return c  # a scalar broadcasts the same in any layout
    inv = _inverse(perm)
    new_shape = tuple(shape[q] for q in inv)
    src = rw.producer(c)
    if src is not None and src.op == "broadcast_in_dim" and c.type.rank == rank:
        dims = tuple(perm[d] for d in src.attrs["broadcast_dimensions"])
        if list(dims) == sorted(dims):  # the same broadcast, straight into the new layout
            return rw.op("broadcast_in_dim", src.inputs[0], loc=loc, shape=new_shape,
                         broadcast_dimensions=dims)
    if _moves_only_units(shape, inv):
        base = src.inputs[0] if src is not None and src.op == "reshape" else c
        return base if base.type.shape == new_shape else \
            rw.op("reshape", base, loc=loc, shape=new_shape)
    if rw.is_param(c) and c.type.rank == rank:
        return relaid_param(rw, c.name, inv, f"{c.name}/relaid")
    if c.type.rank != rank:
        c = rw.op("reshape", c, loc=loc, shape=shape)
    return rw.op("transpose", c, loc=loc, permutation=inv)


# --- conv conversion -------------------------------------------------------------------------
def _convert_conv(rw: Rewriter, node: Node, fmt: str, keep_grouped: bool = False):
    """conv in another layout -> transpose, conv in ``fmt`` (weight param re-laid), transpose."""
    dn = node.attrs["dimension_numbers"]
    want = target_specs(dn, fmt)
    if tuple(dn) == want:
        return None
    if keep_grouped and node.attrs.get("feature_group_count", 1) > 1:
        # for rewrite-grouped-conv's channels-first forms (a batched dot reading contiguous
        # group blocks, taps over H and W); on ShuffleNet 0.95x at batch 1, 1.11-1.17x at 8
        rw.remark("missed", f"left grouped conv %{node.name} in {dn[0]}: grouped=keep",
                  node, reason="grouped-kept")
        return None
    x, w = node.inputs
    if node.attrs.get("batch_group_count", 1) != 1:
        rw.remark("missed", f"left conv %{node.name} in {dn[0]}: batch_group_count > 1 "
                            "(a weight-gradient conv) is not converted", node, reason="batch-groups")
        return None
    if not rw.is_param(w):
        src = rw.producer(w)
        rw.remark("missed", f"left conv %{node.name} in {dn[0]}: its weight %{w.name} is "
                            f"{'a graph input' if src is None else 'computed by ' + src.op}, not a "
                            "param, so it cannot be re-laid-out once", node, reason="weight-not-param")
        return None
    lperm = _spec_perm(dn[0], want[0])
    wnew = relaid_param(rw, w.name, _spec_perm(dn[1], want[1]), f"{w.name}/{want[1].lower()}")
    xt = x if _identity(lperm) else rw.op("transpose", x, loc=node.loc, permutation=lperm)
    y = rw.op("conv", xt, wnew, loc=node.loc,
              **{**dict(node.attrs), "dimension_numbers": want})
    operm = _spec_perm(want[2], dn[2])
    out = y if _identity(operm) else rw.op("transpose", y, loc=node.loc, permutation=operm)
    return rw.replace(node, out)


# --- sinking transposes ----------------------------------------------------------------------
def _transposed(rw: Rewriter, v: Value):
    """``(a, perm)`` when ``v = transpose(a, perm)``, else None."""
    p = rw.producer(v)
    if p is None or p.op != "transpose":
        return None
    return p.inputs[0], tuple(p.attrs["permutation"])


def _operands(rw: Rewriter, node: Node, rank: int, activations):
    """Inputs of ``node`` rewritten for the untransposed layout, and the permutation.

    ``activations``: indices of the inputs laid out like the output (the others are scalars or
    attributes-like operands and stay). Returns None when sinking would not pay: some input
    needs an inverse transpose and no fewer transposes are added than removed.
    """
    perm = None
    for i in activations:
        t = _transposed(rw, node.inputs[i])
        if t is not None and node.inputs[i].type.rank == rank:
            perm = t[1]
            break
    if perm is None:
        return None
    new = list(node.inputs)
    gained = lost = 0
    pending = []
    for i in activations:
        v = node.inputs[i]
        t = _transposed(rw, v)
        if t is not None and t[1] == perm and v.type.rank == rank:
            new[i] = t[0]
            lost += 1
        elif all(_unit(d) for d in v.type.shape):
            continue
        elif _constant_like(rw, v):
            pending.append((i, "const"))
        elif v.type.rank == rank:
            pending.append((i, "inverse"))
            gained += 1
        else:
            return None  # an activation broadcasting from a lower rank: leave it
    # the transpose put after the node cancels against a reader's inverse transpose
    inv = _inverse(perm)
    lost += any(u.op == "transpose" and tuple(u.attrs["permutation"]) == inv
                and rw.num_uses(u.output) > 0  # a dead one stays listed until the sweeps end
                for u in rw.users.get(node.output.name, ()))
    if gained >= lost:
        return None
    for i, how in pending:
        v = node.inputs[i]
        new[i] = _relayout(rw, v, perm, rank, node.loc) if how == "const" else \
            rw.op("transpose", v, loc=node.loc, permutation=_inverse(perm))
    return new, perm


def _rebuild(rw: Rewriter, node: Node, inputs, perm, attrs: dict, out_perm=None):
    """``node`` on the untransposed inputs, its result transposed back; replaces ``node``."""
    y = rw.op(node.op, *inputs, loc=node.loc, **attrs)
    out_perm = perm if out_perm is None else out_perm
    out = y if _identity(out_perm) else rw.op("transpose", y, loc=node.loc, permutation=out_perm)
    return rw.replace(node, out)


def _elementwise_ops() -> set[str]:
    return {name for name, od in OPS.items() if "elementwise" in od.traits}


_WINDOW_ATTRS = ("window_dimensions", "window_strides", "padding", "base_dilation",
                 "window_dilation")
_PAD_ATTRS = ("low", "high", "interior")
_SLICE_ATTRS = ("start", "limit", "strides")
_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
               "reduce_or", "reduce_xor")


def _sink(rw: Rewriter, node: Node):
    """op(transpose(a, p), ...) -> transpose(op(a, ...), p) for a layout-agnostic op."""
    if len(node.outputs) != 1 or node.regions:
        return None
    op, attrs, rank = node.op, dict(node.attrs), node.output.type.rank
    if op in ELEMENTWISE:
        found = _operands(rw, node, rank, range(len(node.inputs)))
        if found is None:
            return None
        return _rebuild(rw, node, found[0], found[1], attrs)
    if op == "concatenate":
        found = _operands(rw, node, rank, range(len(node.inputs)))
        if found is None:
            return None
        new, perm = found
        attrs["axis"] = perm[attrs["axis"] % rank]
        return _rebuild(rw, node, new, perm, attrs)
    t = _transposed(rw, node.inputs[0])
    if t is None:
        return None
    a, perm = t
    rest = list(node.inputs[1:])
    if op == "batch_norm":
        attrs["axis"] = perm[attrs.get("axis", 1) % rank]
    elif op in ("softmax", "log_softmax"):
        attrs["axis"] = perm[attrs.get("axis", -1) % rank]
    elif op in ("reduce_window", "pad", "slice"):
        keys = _WINDOW_ATTRS if op == "reduce_window" else _PAD_ATTRS if op == "pad" else _SLICE_ATTRS
        for k in keys:
            if attrs.get(k) is not None:
                attrs[k] = _permute(attrs[k], perm)
    elif op in _REDUCTIONS:
        axes = tuple(ax % len(perm) for ax in attrs["axes"])
        attrs["axes"] = tuple(sorted(perm[ax] for ax in axes))
        if not attrs.get("keepdims", False):
            kept_a = [d for d in range(len(perm)) if d not in attrs["axes"]]
            kept = [perm[i] for i in range(len(perm)) if i not in axes]
            return _rebuild(rw, node, [a], perm, attrs, tuple(kept_a.index(d) for d in kept))
    elif op == "reshape":
        return _sink_reshape(rw, node, a, perm)
    else:
        return None
    return _rebuild(rw, node, [a, *rest], perm, attrs)


def _groups(ins, outs):
    """Pair the non-unit dims of a reshape into groups ``(in dims, out dims)`` of equal product.

    Unit out dims join the group of the non-unit out dim before them (leading ones: group
    ``None``); unit in dims hold no data and are dropped. None when a symbolic dim does not
    map to itself.
    """
    I = [i for i, d in enumerate(ins) if not _unit(d)]
    O = [j for j, d in enumerate(outs) if not _unit(d)]
    groups, ii, jj = [], 0, 0
    while ii < len(I) and jj < len(O):
        gi, gj = [I[ii]], [O[jj]]
        pi, pj = ins[I[ii]], outs[O[jj]]
        ii, jj = ii + 1, jj + 1
        if not (isinstance(pi, int) and isinstance(pj, int)):
            if not dims_equal(pi, pj):
                return None
            groups.append((gi, gj))
            continue
        while pi != pj:
            if pi < pj:
                if ii == len(I) or not isinstance(ins[I[ii]], int):
                    return None
                pi *= ins[I[ii]]
                gi.append(I[ii])
                ii += 1
            else:
                if jj == len(O) or not isinstance(outs[O[jj]], int):
                    return None
                pj *= outs[O[jj]]
                gj.append(O[jj])
                jj += 1
        groups.append((gi, gj))
    if ii != len(I) or jj != len(O):
        return None
    return groups


def _sink_reshape(rw: Rewriter, node: Node, a: Value, perm):
    """reshape(transpose(a, p)) -> transpose(reshape(a')) when the reshape only splits or merges
    dims that stay together in ``a`` (channel shuffle, flatten of a pooled map)."""
    ins, outs = node.inputs[0].type.shape, node.output.type.shape
    groups = _groups(ins, outs)
    if groups is None:
        return None
    axes = [[perm[i] for i in gi] for gi, _ in groups]
    order = sorted(range(len(groups)), key=lambda g: min(axes[g]))
    desired = [ax for g in order for ax in axes[g]]
    slots = [d for d in range(len(perm)) if not _unit(a.type.shape[d])]
    s = list(range(len(perm)))
    for slot, ax in zip(slots, desired):
        s[slot] = ax
    # Unit out dims: leading ones first, the others right after the non-unit dim before them.
    owner, lead, last = {}, [], None
    for j, d in enumerate(outs):
        if not _unit(d):
            last = next(g for g, (_, gj) in enumerate(groups) if j in gj)
        if last is None:
            lead.append(j)
        else:
            owner.setdefault(last, []).append(j)
    zorder = lead + [j for g in order for j in owner.get(g, [])]
    z = tuple(outs[j] for j in zorder)
    residual = tuple(zorder.index(j) for j in range(len(outs)))
    moved = not _identity(s)
    if _identity(residual) and moved:
        return None  # the transpose stays where it is: it is the data movement the reshape needs
    single = rw.num_uses(node.inputs[0]) == 1
    if moved and not single:
        return None  # would add a transpose beside the one other users still read
    src = rw.op("transpose", a, loc=node.loc, permutation=tuple(s)) if moved else a
    y = rw.op("reshape", src, loc=node.loc, shape=z)
    out = y if _identity(residual) else rw.op("transpose", y, loc=node.loc, permutation=residual)
    return rw.replace(node, out)


@pattern("transpose-as-reshape", ops="transpose")
def transpose_as_reshape(rw: Rewriter, node: Node):
    """A transpose that only moves size-1 dims is a reshape (no data moves)."""
    x = node.inputs[0]
    perm = node.attrs["permutation"]
    if _identity(perm) or not _moves_only_units(x.type.shape, perm):
        return None
    return rw.replace(node, rw.op("reshape", x, loc=node.loc, shape=node.output.type.shape))


ELEMENTWISE = _elementwise_ops()
_SINK_OPS = ELEMENTWISE | {"concatenate", "batch_norm", "softmax", "log_softmax", "reduce_window",
                           "pad", "slice", "reshape", *_REDUCTIONS}
sink_transpose = pattern("sink-transpose", ops=_SINK_OPS)(_sink)
SINK_PATTERNS = [merge_transposes, transpose_as_reshape, merge_reshapes, drop_identity_op,
                 sink_transpose]


# --- the pass --------------------------------------------------------------------------------
def convert_layout(graph: Graph, fmt: str, ctx: PassContext | None = None,
                   keep_grouped: bool = False) -> tuple[Graph, list]:
    """``graph`` with its convs in ``fmt`` and transposes sunk; also the convs converted."""
    converted: list[str] = []

    @pattern(f"conv-to-{fmt.lower()}", ops="conv")
    def convert(rw: Rewriter, node: Node):
        fired = _convert_conv(rw, node, fmt, keep_grouped)
        if fired:
            converted.append(node.name)
        return fired

    g = apply_patterns(graph, [convert], ctx)
    if not converted:
        return graph, converted
    return apply_patterns(g, SINK_PATTERNS, ctx), converted


@pattern("dense-weight-to-kn", ops="dot_general")
def dense_weight_to_kn(rw: Rewriter, node: Node):
    """x . W[N,K]^T (ONNX Gemm transB=1) -> x . W'[K,N]: the weight transposed once, here.

    XLA:CPU runs the [K,N] form up to 2x faster without YNNPACK (issue 16) and no slower with it.
    """
    x, w = node.inputs
    (lc, rc), batch = node.attrs["contracting_dims"], node.attrs.get("batch_dims", ((), ()))
    if w.type.rank != 2 or tuple(rc) != (1,) or any(batch) or not rw.is_param(w):
        return None
    if rw.num_uses(w) > 1:
        rw.remark("missed", f"left dense weight @{w.name} as [N,K]: it has other users, a "
                            "transposed copy would double it", node, reason="shared-weight")
        return None
    wt = relaid_param(rw, w.name, (1, 0), f"{w.name}/kn")
    return rw.replace(node, rw.op("dot_general", x, wt, loc=node.loc,
                                  **{**dict(node.attrs), "contracting_dims": (tuple(lc), (0,))}))


def _transposes(graph: Graph) -> list[str]:
    """Where the transposes of activations are: ``%name (feeds op, op)``."""
    out = []
    for n in graph.nodes:
        if n.op == "transpose" and not graph.is_param(n.inputs[0]):
            users = sorted({u.op for u in graph.users.get(n.output.name, ())})
            if n.output.name in {v.name for v in graph.outputs}:
                users.append("output")
            out.append(f"%{n.output.name} ({', '.join(users)})")
    return out


def _example_inputs(graph: Graph, ctx: PassContext) -> list | str:
    """Calibration inputs when given, else seeded random ones (a symbolic batch set to 1); or
    the symbolic sizes that make random inputs meaningless."""
    if ctx.calibration:
        return list(ctx.calibration[0])
    sizes = sorted({str(d) for v in graph.inputs for d in v.type.shape[1:] if not isinstance(d, int)})
    if sizes:
        return ", ".join(sizes)
    rng = np.random.default_rng(0)
    arrays = []
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else 1 for d in v.type.shape)
        dt = numpy_dtype(v.type.dtype)
        arrays.append(rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                      else np.zeros(shape, dt))
    return arrays


def measure(ctx: PassContext, graphs: dict, inputs, rounds: int = 7, round_s: float = 0.02) -> dict:
    """Median seconds per call of each graph, compiled by the context's executor, interleaved."""
    fns = {k: ctx.executor(g, jit=True) for k, g in graphs.items()}
    calls = {}
    for k, fn in fns.items():
        fn(*inputs)  # compile
        t0 = time.perf_counter()
        fn(*inputs)
        calls[k] = max(1, min(50, int(round_s / max(time.perf_counter() - t0, 1e-6))))
    times = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            for _ in range(calls[k]):
                fns[k](*inputs)
            times[k].append((time.perf_counter() - t0) / calls[k])
    return {k: statistics.median(v) for k, v in times.items()}


@register_pass("layout", options=[
    Option("format", str, "NHWC", "activation layout of conv regions (auto: measure both here)",
           choices=FORMATS),
    Option("dense", bool, True, "store dense weights read transposed (x . W^T) as [K,N]"),
    Option("grouped", str, "convert", "grouped/depthwise convs: convert, or keep their layout "
           "(for rewrite-grouped-conv's channels-first forms)", choices=("convert", "keep"))])
def layout(graph: Graph, ctx: PassContext, format: str = "NHWC", dense: bool = True,
           grouped: str = "convert") -> Graph:
    """Lay conv regions out in NHWC/NCHW with weights stored in the kernel's layout."""
    if dense:
        relaid = apply_patterns(graph, [dense_weight_to_kn], ctx)
        count = sum(1 for k in relaid.params if k.endswith("/kn")) - \
            sum(1 for k in graph.params if k.endswith("/kn"))
        if relaid is not graph and count:
            ctx.remark("applied", f"stored {count} dense weight(s) as [K,N]", dense=count)
        graph = relaid
    target = getattr(ctx, "target", "cpu") if ctx is not None else "cpu"
    if grouped == "keep" and target != "cpu":  # rewrite-grouped-conv leaves them for cuDNN/TPU
        if any(n.op == "conv" and n.attrs.get("feature_group_count", 1) > 1 for n in graph.nodes):
                ctx.remark("note", f"grouped=keep applies to the cpu target; converting grouped "
                               f"convs for {target}")
        grouped = "convert"
    keep = grouped == "keep"
    if format == "auto":
        return _auto(graph, ctx, grouped)
    result, converted = convert_layout(graph, format, ctx, keep)
    for n in result.nodes:  # region bodies are not rewritten: say which convs stay inside
        inner = [m for r in n.regions for m in r.walk() if m.op == "conv"
                 and tuple(m.attrs["dimension_numbers"]) != target_specs(
                     m.attrs["dimension_numbers"], format)]
        if inner:
            what = f"{n.op} {n.attrs['name']!r}" if n.op == "composite" else n.op
            ctx.remark("missed", f"left {len(inner)} conv(s) inside {what} in "
                                 f"{inner[0].attrs['dimension_numbers'][0]}: region bodies are not "
                                 "re-laid-out (run layout before fuse)", n, reason="in-region")
    if converted:
        left = _transposes(result)
        ctx.remark("applied", f"converted {len(converted)} conv(s) to {format} with re-laid-out "
                              f"weights; {len(left)} activation transpose(s) left"
                              + (f": {', '.join(left[:8])}{' ...' if len(left) > 8 else ''}"
                                 if left else ""),
                   convs=len(converted), transposes=len(left))
    return result


def _auto(graph: Graph, ctx: PassContext, grouped: str = "convert") -> Graph:
    """Build both layouts, time them on this host through the executor, keep the faster."""
    quiet = PassContext(executor=ctx.executor, calibration=ctx.calibration, data=ctx.data)
    candidates = {}
    for fmt in ("NCHW", "NHWC"):
        g, converted = convert_layout(graph, fmt, quiet, grouped == "keep")
        candidates[fmt] = g
    if candidates["NCHW"] is candidates["NHWC"] is graph:
        return graph  # no conv to lay out
    if ctx.executor is None:
        ctx.remark("note", "format=auto needs an executor to measure; kept NHWC")
        return layout(graph, ctx, "NHWC", dense=False, grouped=grouped)
    inputs = _example_inputs(graph, ctx)
    if isinstance(inputs, str):
        ctx.remark("note", f"format=auto needs calibration inputs to measure a model with "
                           f"symbolic sizes other than the batch ({inputs}); kept NHWC")
        return layout(graph, ctx, "NHWC", dense=False, grouped=grouped)
    try:
        secs = measure(ctx, candidates, inputs)
    except Exception as e:  # e.g. symbolic image sizes set to 1 are too small for a kernel
        ctx.remark("note", f"format=auto could not run the model to measure ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); kept NHWC")
        return layout(graph, ctx, "NHWC", dense=False, grouped=grouped)
    best = min(secs, key=secs.get)
    figures = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in secs.items())
    ctx.remark("note", f"format=auto measured per call on this host: {figures}; kept {best}",
               **{f"{k}_ms": round(v * 1e3, 4) for k, v in secs.items()}, chosen=best)
    return layout(graph, ctx, best, dense=False, grouped=grouped)
