"""The coupling rules of the prune analysis: one function per op, saying which positions of
its operands and results are the same channel (see ``prune_groups``).

A rule is ``fn(analysis, node, tensor, axis, final)``: axis ``axis`` of ``tensor`` (an operand or
result of ``node``) has channels; the rule couples them to the node's other tensors with
``analysis.couple``/``same``, or blocks the axis with a reason. It returns ``"defer"`` to be
asked again once more of the graph is known (``final`` is True on the last asking).
"""
from __future__ import annotations

import numpy as np

from ..ir import Node
from ..ir.infer import reshape_groups

__all__ = ["RULES", "elementwise"]

REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
              "reduce_xor"}
AXIS_OPS = {"softmax", "log_softmax", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin",
            "cumlogsumexp", "sort"}


def _slots(n: Node, t: str):
    ins = [i for i, v in enumerate(n.inputs) if v.name == t]
    outs = [j for j, v in enumerate(n.outputs) if v.name == t]
    return ins, outs


def elementwise(an, n: Node, t: str, a: int, final: bool):
    out = n.outputs[0]
    rank = out.type.rank
    ins, outs = _slots(n, t)
    k = a if outs else a + rank - an.types[t].rank
    dim = out.type.shape[k]
    if an.types[t].shape[a] != dim:
        return None  # t broadcasts along this axis: no channel of it to couple
    an.same(t, a, out.name, k)
    for v in n.inputs:
        ax = k - (rank - v.type.rank)
        if ax >= 0 and v.type.shape[ax] == dim and v.name != t:
            an.same(t, a, v.name, ax)
    return None


def _broadcast(an, n: Node, t: str, a: int, final: bool):
    bd = n.attrs["broadcast_dimensions"]
    x, y = n.inputs[0], n.outputs[0]
    if t == x.name:
        if x.type.shape[a] == y.type.shape[bd[a]]:
            an.same(t, a, y.name, bd[a])
    elif a in bd and x.type.shape[bd.index(a)] == y.type.shape[a]:
        an.same(t, a, x.name, bd.index(a))
    return None


def _transpose(an, n: Node, t: str, a: int, final: bool):
    perm = n.attrs["permutation"]
    x, y = n.inputs[0], n.outputs[0]
    if t == x.name:
        an.same(t, a, y.name, list(perm).index(a))
    else:
        an.same(t, a, x.name, perm[a])
    return None


def _reshape(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    src, dst = x.type.shape, y.type.shape
    try:
        groups = reshape_groups(src, dst)
    except Exception:  # noqa: BLE001 - any failure means we cannot follow it
        an.block(t, a, f"reshape %{n.name} cannot be followed")
        return None
    from_in = t == x.name
    for gi, gj in groups:
        if a not in (gi if from_in else gj):
            continue
        sizes_in, sizes_out = [src[k] for k in gi], [dst[k] for k in gj]
        if not all(isinstance(d, int) for d in sizes_in + sizes_out):
            an.block(t, a, f"reshape %{n.name} regroups a symbolic dim")
            return None
        if len(gi) == 1 and len(gj) == 1:
            an.same(x.name, gi[0], y.name, gj[0])
        elif len(gi) == 1:  # a split: the outermost factor is the channel (heads)
            if not from_in and a != gj[0]:
                an.block(t, a, f"reshape %{n.name} splits the channel axis and this is an inner factor")
                return None
            inner = int(np.prod(sizes_out[1:]))
            pos = np.arange(sizes_in[0])
            an.couple(x.name, gi[0], pos, y.name, gj[0], pos // inner)
            if an.track(y.name, gj[0]):
                an.split_atoms.update(an.atoms(y.name, gj[0]).tolist())
        elif len(gj) == 1:  # a merge (flatten): each merged position has one channel index
            if from_in:
                ax = a
            else:
                tracked = [k for k in gi if (x.name, k) in an.base]
                if len(tracked) != 1:
                    if not final and not tracked:
                        return "defer"
                    an.block(t, a, f"reshape %{n.name} merges axes {tuple(gi)} of %{x.name} and "
                                   "which one holds the channels is not known")
                    return None
                ax = tracked[0]
            stride = int(np.prod([src[k] for k in gi if k > ax]))
            m = np.arange(sizes_out[0])
            an.couple(y.name, gj[0], m, x.name, ax, (m // stride) % src[ax])
        else:
            an.block(t, a, f"reshape %{n.name} regroups axes {tuple(gi)} into {tuple(gj)}")
        return None
    an.block(t, a, f"reshape %{n.name} drops the axis")
    return None


def _concat(an, n: Node, t: str, a: int, final: bool):
    y = n.outputs[0]
    c = n.attrs["axis"] % y.type.rank
    if a != c:
        for v in (*n.inputs, y):
            if v.name != t:
                an.same(t, a, v.name, a)
        return None
    off = 0
    for v in n.inputs:
        d = v.type.shape[c]
        if not isinstance(d, int):
            an.block(t, a, f"concatenate %{n.name} of a symbolic size")
            return None
        if t in (v.name, y.name):
            pos = np.arange(d)
            an.couple(v.name, c, pos, y.name, c, off + pos)
        off += d
    return None


def _slice(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    start, limit = n.attrs["start"][a], n.attrs["limit"][a]
    stride = (n.attrs.get("strides") or (1,) * x.type.rank)[a]
    if stride != 1 or not isinstance(start, int) or not isinstance(limit, int):
        an.block(t, a, f"slice %{n.name} takes a strided or symbolic part of the axis")
        return None
    pos = np.arange(limit - start)
    an.couple(x.name, a, start + pos, y.name, a, pos)
    return None


def _pad(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    interior = n.attrs.get("interior") or (0,) * x.type.rank
    if t != x.name and t != y.name:
        return None
    if n.attrs["low"][a] or n.attrs["high"][a] or interior[a]:
        an.block(t, a, f"pad %{n.name} pads the axis")
    else:
        an.same(x.name, a, y.name, a)
    return None


def _reduce(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    rank = x.type.rank
    axes = sorted(k % rank for k in n.attrs["axes"])
    keep = n.attrs.get("keepdims", False)
    if t == x.name:
        if a in axes:
            an.block(t, a, f"{n.op} %{n.name} reduces over it")
            return None
        an.same(t, a, y.name, a if keep else a - sum(k < a for k in axes))
    else:
        rest = [k for k in range(rank) if keep or k not in axes]
        an.same(t, a, x.name, rest[a])
    return None


def _axis_op(an, n: Node, t: str, a: int, final: bool):
    x = n.inputs[0]
    axis = n.attrs.get("axis", -1) % x.type.rank
    if a == axis:
        an.block(t, a, f"{n.op} %{n.name} works along it")
        return None
    if n.op in ("argmax", "argmin") and not n.attrs.get("keepdims", False):
        y = n.outputs[0]
        if t == x.name:
            an.same(t, a, y.name, a - (a > axis))
        else:
            an.same(t, a, x.name, a + (a >= axis))
        return None
    for v in (*n.inputs, *n.outputs):
        if v.name != t and v.type.rank == x.type.rank:
            an.same(t, a, v.name, a)
    return None


def _reduce_window(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    rank = x.type.rank
    one = (1,) * rank
    ok = (n.attrs["window_dimensions"][a] == 1 and (n.attrs.get("window_strides") or one)[a] == 1
          and tuple((n.attrs.get("padding") or ((0, 0),) * rank)[a]) == (0, 0)
          and (n.attrs.get("base_dilation") or one)[a] == 1)
    if ok:
        an.same(x.name, a, y.name, a)
    else:
        an.block(t, a, f"reduce_window %{n.name} pools across it")
    return None


def _batch_norm(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    axis = n.attrs.get("axis", 1) % x.type.rank
    if t in (x.name, y.name):
        an.same(t, a, y.name if t == x.name else x.name, a)
        if a == axis:
            for s in n.inputs[1:]:
                an.same(t, a, s.name, 0)
    else:
        an.same(t, a, x.name, axis)
    return None


def _dot(an, n: Node, t: str, a: int, final: bool):
    lhs, rhs = n.inputs
    y = n.outputs[0]
    (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
    lfree = [i for i in range(lhs.type.rank) if i not in lc and i not in lb]
    rfree = [i for i in range(rhs.type.rank) if i not in rc and i not in rb]
    nb = len(lb)
    links = []  # (operand, axis, output axis or None, partner operand, partner axis)
    for v, c, b, free, off, other, oc, ob in ((lhs, lc, lb, lfree, nb, rhs, rc, rb),
                                             (rhs, rc, rb, rfree, nb + len(lfree), lhs, lc, lb)):
        if v.name != t:
            continue
        if a in c:
            links.append((other.name, oc[list(c).index(a)]))
        elif a in b:
            links += [(other.name, ob[list(b).index(a)]), (y.name, list(b).index(a))]
        else:
            links.append((y.name, off + free.index(a)))
    if t == y.name:
        if a < nb:
            links += [(lhs.name, lb[a]), (rhs.name, rb[a])]
        elif a < nb + len(lfree):
            links.append((lhs.name, lfree[a - nb]))
        else:
            links.append((rhs.name, rfree[a - nb - len(lfree)]))
    for name, ax in links:
        an.same(t, a, name, ax)
    return None


def _conv(an, n: Node, t: str, a: int, final: bool):
    x, w = n.inputs
    y = n.outputs[0]
    lspec, rspec, ospec = n.attrs["dimension_numbers"]
    groups = n.attrs.get("feature_group_count", 1)
    if n.attrs.get("batch_group_count", 1) != 1:
        an.block(t, a, f"conv %{n.name} has a batch group count")
        return None
    letter = (lspec if t == x.name else rspec if t == w.name else ospec)[a]
    if letter not in "NCOI":
        an.block(t, a, f"conv %{n.name} slides a window over it")
        return None
    if letter == "N":
        an.same(x.name, lspec.index("N"), y.name, ospec.index("N"))
        return None
    xc, wi, wo, yc = lspec.index("C"), rspec.index("I"), rspec.index("O"), ospec.index("C")
    cin, i_per, o = x.type.shape[xc], w.type.shape[wi], w.type.shape[wo]
    if not all(isinstance(d, int) for d in (cin, i_per, o)):
        an.block(t, a, f"conv %{n.name} has symbolic channel counts")
        return None
    an.same(w.name, wo, y.name, yc)
    m = o // groups
    if groups == 1:
        an.same(x.name, xc, w.name, wi)
    elif i_per == 1:  # depthwise: input channel g owns outputs g*m .. g*m+m-1
        pos = np.arange(cin)
        for k in range(m):
            an.couple(x.name, xc, pos, y.name, yc, pos * m + k)
    else:  # grouped: local index i is shared by every group, output m by every group too
        g_idx, i_idx = np.divmod(np.arange(cin), i_per)
        an.couple(x.name, xc, g_idx * i_per + i_idx, w.name, wi, i_idx)
        go, mo = np.divmod(np.arange(o), m)
        an.couple(y.name, yc, go * m + mo, y.name, yc, mo)
    return None


def _composite(an, n: Node, t: str, a: int, final: bool):
    if len(n.regions) != 1:
        an._block_node(n, f"{n.op} %{n.name} has several regions")
        return None
    body = n.body
    for v, b in zip(n.inputs, body.inputs):
        if t in (v.name, b.name):
            an.same(v.name, a, b.name, a)
    for v, b in zip(n.outputs, body.outputs):
        if t in (v.name, b.name):
            an.same(v.name, a, b.name, a)
    return None


def _squeeze(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    gone = {k % x.type.rank for k in n.attrs["axes"]}
    kept = [k for k in range(x.type.rank) if k not in gone]
    if t == x.name:
        if a in kept:
            an.same(t, a, y.name, kept.index(a))
    else:
        an.same(t, a, x.name, kept[a])
    return None


def _expand_dims(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    new = {k % y.type.rank for k in n.attrs["axes"]}
    old = [k for k in range(y.type.rank) if k not in new]
    if t == x.name:
        an.same(t, a, y.name, old[a])
    elif a in old:
        an.same(t, a, x.name, old.index(a))
    return None


def _rev(an, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    d = x.type.shape[a]
    if a not in {k % x.type.rank for k in n.attrs["axes"]}:
        an.same(x.name, a, y.name, a)
    elif isinstance(d, int):  # position p comes out at d - 1 - p
        an.couple(x.name, a, np.arange(d), y.name, a, d - 1 - np.arange(d))
    else:
        an.block(t, a, f"rev %{n.name} reverses a symbolic axis")
    return None


def _constant(an, n: Node, t: str, a: int, final: bool):
    return None  # a fill: its shape attribute follows, it has no channels of its own


RULES = {"broadcast_in_dim": _broadcast, "transpose": _transpose, "reshape": _reshape,
          "concatenate": _concat, "slice": _slice, "pad": _pad, "reduce_window": _reduce_window,
          "batch_norm": _batch_norm, "dot_general": _dot, "conv": _conv, "composite": _composite,
          "constant": _constant, "squeeze": _squeeze, "expand_dims": _expand_dims, "rev": _rev, **{op: _reduce for op in REDUCTIONS},
          **{op: _axis_op for op in AXIS_OPS}}
