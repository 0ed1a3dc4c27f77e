"""rewrite-grouped-conv: grouped and depthwise convs in forms XLA:CPU runs well (issue 16).

XLA:CPU's grouped convolution is 10-70x slower than the same work written otherwise
(ShuffleNet stays 13-16x onnxruntime as imported). So:

- a depthwise conv (one input channel per group) becomes k*k shifted multiply-adds: strided
  slices of the padded input times per-channel weight taps, summed; XLA fuses them into one
  loop over the output;
- any other grouped conv becomes, for a 1x1 kernel, one dot_general batched over the groups
  (``grouped=dot``, the default: after ``layout`` on ShuffleNet it measured 0.87x/1.37x
  onnxruntime at batch 1/8 against 1.34x/1.71x for ``grouped=split``, 2 threads, see
  ``benchmarks/layout.py``), else ``groups`` ordinary convs on channel slices, concatenated
  (``grouped=split``). In NCHW the dot reads each group's channels as one contiguous block
  with the weight on the left, which needs no copy of either operand.
The weight slices are made once, at pass time, as new params.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..ir import Graph, Node, Value
from .context import PassContext
from .registry import Option, register_pass
from .rewrite import Rewriter, apply_patterns, pattern


def _param_slices(rw: Rewriter, w: Value, axis: int, groups: int) -> list[Value]:
    """The weight cut into ``groups`` equal parts along ``axis``, each a new param."""
    arr = rw.params[w.name]
    size = arr.shape[axis] // groups
    out = []
    for g in range(groups):
        index = [slice(None)] * arr.ndim
        index[axis] = slice(g * size, (g + 1) * size)
        out.append(rw.add_param(np.ascontiguousarray(arr[tuple(index)]), f"{w.name}/g{g}"))
    return out


def _why_not(rw: Rewriter, node: Node) -> str | None:
    """Why this grouped conv cannot be rewritten (None: it can)."""
    a = node.attrs
    lspec, rspec, ospec = a["dimension_numbers"]
    if not rw.is_param(node.inputs[1]):
        return f"its weight %{node.inputs[1].name} is not a param"
    notes = rw.annotations(node.inputs[1].name)
    if notes:  # a mask or quant params would not describe the sliced weights
        return f"its weight @{node.inputs[1].name} carries {', '.join(a.kind for a in notes)} " \
               "annotations"
    if a.get("batch_group_count", 1) != 1:
        return "batch_group_count > 1"
    if any(d != 1 for d in a.get("lhs_dilation") or ()):
        return "lhs_dilation (a transposed conv)"
    if [c for c in lspec if c not in "NC"] != [c for c in ospec if c not in "NC"] or \
            (lspec.index("N"), lspec.index("C")) != (ospec.index("N"), ospec.index("C")):
        return f"input layout {lspec} differs from output layout {ospec}"
    if a.get("preferred_element_type") not in (None, node.inputs[0].type.dtype):
        return "it accumulates in another type"
    if not all(isinstance(d, int) for i, d in enumerate(node.inputs[0].type.shape)
               if lspec[i] not in "N"):
        return "its channel or spatial dims are symbolic"
    return None


def _depthwise(rw: Rewriter, node: Node) -> Value:
    """out = sum over taps t of slice_t(pad(x)) * w[t] (per output channel)."""
    a = node.attrs
    x, w = node.inputs
    lspec, rspec, _ = a["dimension_numbers"]
    rank = x.type.rank
    c_axis = lspec.index("C")
    cin = x.type.shape[c_axis]
    cout = w.type.shape[rspec.index("O")]
    mult = cout // cin
    spatial = [c for c in rspec if c not in "OI"]  # kernel order: attribute index k
    nsp = len(spatial)
    strides = a.get("window_strides") or (1,) * nsp
    padding = a.get("padding") or ((0, 0),) * nsp
    rdil = a.get("rhs_dilation") or (1,) * nsp
    if mult > 1:  # out channel c*m + k reads input channel c
        before, after = tuple(x.type.shape[:c_axis]), tuple(x.type.shape[c_axis + 1:])
        split, wide = before + (cin, 1) + after, before + (cin, mult) + after
        x = rw.op("reshape", x, loc=node.loc, shape=split)
        x = rw.op("broadcast_in_dim", x, loc=node.loc, shape=wide,
                  broadcast_dimensions=tuple(range(rank + 1)))
        x = rw.op("reshape", x, loc=node.loc, shape=before + (cout,) + after)
    lo, hi = [0] * rank, [0] * rank
    for k, letter in enumerate(spatial):
        lo[lspec.index(letter)], hi[lspec.index(letter)] = padding[k]
    if any(lo) or any(hi):
        # One padded copy that the taps slice: padding each tap's slice instead fuses the sum
        # into one loop without that copy, but measured 10-25% slower on ShuffleNet (the pads
        # become per-element bounds checks in the loop).
        zero = rw.op("constant", loc=node.loc, value=0.0, dtype=x.type.dtype)
        x = rw.op("pad", x, zero, loc=node.loc, low=tuple(lo), high=tuple(hi))
    out_shape = node.output.type.shape
    taps = rw.params[w.name]
    # the taps as one [k..., O] param laid out for slicing rows (made once, at pass time)
    order = [rspec.index(c) for c in spatial] + [rspec.index("I"), rspec.index("O")]
    tap_arr = np.ascontiguousarray(np.transpose(taps, order).reshape(
        tuple(taps.shape[rspec.index(c)] for c in spatial) + (cout,)))
    tap_param = rw.add_param(tap_arr, f"{w.name}/taps")
    bshape = tuple(cout if i == c_axis else 1 for i in range(rank))
    acc = None
    for tap in itertools.product(*(range(tap_arr.shape[k]) for k in range(nsp))):
        start, limit, step = [0] * rank, list(x.type.shape), [1] * rank
        for k, letter in enumerate(spatial):
            d = lspec.index(letter)
            start[d] = tap[k] * rdil[k]
            limit[d] = start[d] + (out_shape[d] - 1) * strides[k] + 1
            step[d] = strides[k]
        sl = rw.op("slice", x, loc=node.loc, start=tuple(start), limit=tuple(limit),
                   strides=tuple(step))
        wt = rw.op("slice", tap_param, loc=node.loc, start=tuple(tap) + (0,),
                   limit=tuple(t + 1 for t in tap) + (cout,))
        wt = rw.op("reshape", wt, loc=node.loc, shape=bshape)
        term = rw.op("mul", sl, wt, loc=node.loc)
        acc = term if acc is None else rw.op("add", acc, term, loc=node.loc)
    return acc


def _split(rw: Rewriter, node: Node) -> Value:
    """``groups`` convs on channel slices of the input, concatenated along the channels."""
    a = node.attrs
    x, w = node.inputs
    lspec, rspec, ospec = a["dimension_numbers"]
    g = a["feature_group_count"]
    c_axis = lspec.index("C")
    size = x.type.shape[c_axis] // g
    outs = []
    for k, wk in enumerate(_param_slices(rw, w, rspec.index("O"), g)):
        start = [0] * x.type.rank
        limit = list(x.type.shape)
        start[c_axis], limit[c_axis] = k * size, (k + 1) * size
        xk = rw.op("slice", x, loc=node.loc, start=tuple(start), limit=tuple(limit))
        outs.append(rw.op("conv", xk, wk, loc=node.loc,
                          **{**dict(a), "feature_group_count": 1}))
    return rw.op("concatenate", *outs, loc=node.loc, axis=ospec.index("C"))


def _batched_dot(rw: Rewriter, node: Node) -> Value | None:
    """A 1x1 grouped conv (no padding) as one dot_general batched over the groups."""
    a = node.attrs
    x, w = node.inputs
    lspec, rspec, ospec = a["dimension_numbers"]
    g = a["feature_group_count"]
    spatial = [c for c in rspec if c not in "OI"]
    nsp = len(spatial)
    if any(w.type.shape[rspec.index(c)] != 1 for c in spatial) or \
            any(p != (0, 0) for p in a.get("padding") or ()):
        return None
    strides = a.get("window_strides") or (1,) * nsp
    if any(s != 1 for s in strides):
        start, limit, step = [0] * x.type.rank, list(x.type.shape), [1] * x.type.rank
        for k, letter in enumerate(spatial):
            step[lspec.index(letter)] = strides[k]
        x = rw.op("slice", x, loc=node.loc, start=tuple(start), limit=tuple(limit),
                  strides=tuple(step))
    c = lspec.index("C")
    cin, cout = x.type.shape[c], w.type.shape[rspec.index("O")]
    io = np.transpose(rw.params[w.name], [rspec.index("I"), rspec.index("O")] +
                      [rspec.index(s) for s in spatial]).reshape(cin // g, cout)
    if lspec[:2] == "NC":
        return _batched_dot_channels_first(rw, node, x, io, g)
    xs = rw.op("reshape", x, loc=node.loc,
               shape=tuple(x.type.shape[:c]) + (g, cin // g) + tuple(x.type.shape[c + 1:]))
    wg = rw.add_param(np.ascontiguousarray(io.reshape(cin // g, g, cout // g).transpose(1, 0, 2)),
                      f"{w.name}/groups")
    y = rw.op("dot_general", xs, wg, loc=node.loc, contracting_dims=((c + 1,), (1,)),
              batch_dims=((c,), (0,)))
    # y: [g, other dims of x in order, O/g] -> x's order with (g, O/g) at the channel position
    rank = x.type.rank
    perm = list(range(1, c + 1)) + [0, rank] + list(range(c + 1, rank))
    y = rw.op("transpose", y, loc=node.loc, permutation=tuple(perm))
    return rw.op("reshape", y, loc=node.loc, shape=node.output.type.shape)


def _batched_dot_channels_first(rw: Rewriter, node: Node, x: Value, io: np.ndarray,
                                 g: int) -> Value:
    """NC... layout: W[g, O/g, C/g] . x[N, g, C/g, S] -> [g, O/g, N, S]; each group's input is
    a contiguous block, so no operand is copied (2-4x faster than the NHWC form at batch 1)."""
    n, cin = x.type.shape[0], x.type.shape[1]
    cout = io.shape[1]
    space = 1
    for d in x.type.shape[2:]:
        space *= d
    xs = rw.op("reshape", x, loc=node.loc, shape=(n, g, cin // g, space))
    wl = rw.add_param(np.ascontiguousarray(io.reshape(cin // g, g, cout // g).transpose(1, 2, 0)),
                      f"{rw.resolve(node.inputs[1]).name}/groups")
    y = rw.op("dot_general", wl, xs, loc=node.loc, contracting_dims=((2,), (2,)),
              batch_dims=((0,), (1,)))
    if not (isinstance(n, int) and n == 1):  # a batch of one moves without a copy
        y = rw.op("transpose", y, loc=node.loc, permutation=(2, 0, 1, 3))
    return rw.op("reshape", y, loc=node.loc, shape=node.output.type.shape)


def rewrite_patterns(depthwise: str, grouped: str):
    """The pattern for the chosen forms."""

    @pattern("rewrite-grouped-conv", ops="conv")
    def rewrite(rw: Rewriter, node: Node):
        g = node.attrs.get("feature_group_count", 1)
        if g == 1:
            return None
        lspec, rspec, _ = node.attrs["dimension_numbers"]
        is_dw = node.inputs[1].type.shape[rspec.index("I")] == 1
        form = depthwise if is_dw else grouped
        if form == "keep":
            return None
        why = _why_not(rw, node)
        if why is not None:
            rw.remark("missed", f"left {'depthwise' if is_dw else 'grouped'} conv %{node.name} "
                                f"({g} groups): {why}", node, reason=why)
            return None
        if is_dw:
            out, what = _depthwise(rw, node), "shifted multiply-adds"
        elif form == "dot":
            out, what = _batched_dot(rw, node), "a batched dot"
            if out is None:
                out, what = _split(rw, node), f"{g} convs (not 1x1: no batched dot)"
        else:
            out, what = _split(rw, node), f"{g} convs concatenated"
        rw.remark("applied", f"{'depthwise' if is_dw else 'grouped'} conv %{node.name} "
                             f"({g} groups) as {what}", node)
        return rw.replace(node, out)

    return [rewrite]


@register_pass("rewrite-grouped-conv", options=[
    Option("depthwise", str, "shifted", "depthwise convs: shifted multiply-adds, or keep",
           choices=("shifted", "keep")),
    Option("grouped", str, "dot", "other grouped convs: a batched dot for 1x1 kernels, else "
           "one conv per group (dot); always one conv per group (split); or keep",
           choices=("dot", "split", "keep"))])
def rewrite_grouped_conv(graph: Graph, ctx: PassContext, depthwise: str = "shifted",
                         grouped: str = "dot") -> Graph:
    """Grouped and depthwise convs as forms XLA:CPU runs fast (shifted multiply-adds, splits)."""
    target = getattr(ctx, "target", "cpu") if ctx is not None else "cpu"
    if target != "cpu":  # cuDNN and TPU convolutions run grouped convs well as they are
        if any(n.op == "conv" and n.attrs.get("feature_group_count", 1) > 1 for n in graph.nodes):
            ctx.remark("note", f"grouped convs kept: the rewrite is for XLA:CPU, the target is "
                               f"{target}")
        return graph
    return apply_patterns(graph, rewrite_patterns(depthwise, grouped), ctx)

