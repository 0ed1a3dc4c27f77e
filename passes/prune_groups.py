"""Dependency groups for structured pruning: which positions of which axes must go together.

Every position of every axis the analysis reaches is an *atom*; each op says which atoms of its
operands and results are the same channel (a bias add couples the bias with the dense output,
a residual add couples both branches, a concat maps an input onto an offset of its output, a
head reshape ties the ``head_dim`` columns of one head together, a flatten ties a conv channel
to its interleaved rows). Atoms joined that way form a *unit*: the smallest thing that can be
removed (a channel, a neuron, a head with all the columns it owns). Units that share an axis
form a *group*. A unit touching an axis that cannot shrink (a graph input or output, an axis
reduced over, an op the analysis does not know) is blocked, with the reason.

Removing a unit slices every member param along its axis and sets the shape attributes that
name the axis (reshape, broadcast, constant fills, slice bounds, depthwise group counts); types
then follow by ``ir.infer_types``. When the unit's params are zero, the output is unchanged.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.infer import reshape_groups
from ..ir.registry import OPS

__all__ = ["Analysis", "Unit", "Group", "analyze", "nonempty", "remove_units", "zero_units",
           "weight_axes", "weight_params"]

_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
               "reduce_xor"}
_AXIS_OPS = {"softmax", "log_softmax", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin",
             "cumlogsumexp", "sort"}


@dataclass
class Unit:
    """One removable channel/neuron/head: the positions it owns on each coupled axis."""

    id: int
    members: dict = field(default_factory=dict)  # (tensor, axis) -> np.ndarray of positions
    blocked: str = ""  # why it cannot be removed ("" when it can)
    group: int = -1

    def param_members(self, params) -> list[tuple[str, int, np.ndarray]]:
        return [(t, a, p) for (t, a), p in self.members.items() if t in params]


@dataclass
class Group:
    """Units coupled through shared axes; pruned together by one importance ranking."""

    id: int
    units: list[int]
    axes: list[tuple[str, int]]
    seeds: list[tuple[str, int]]  # (weight param, output axis) of the layers that produce it
    heads: bool = False  # reached through a reshape into heads
    channels: int = 0  # size of the first seed axis (channels before)


class Analysis:
    """The coupling analysis of one graph (see the module docstring)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.params = graph.params
        self.types: dict[str, object] = {k: Value(k, _type_of(v)).type for k, v in graph.params.items()}
        self.mentions: dict[str, list[Node]] = {}
        self.nodes: list[Node] = []
        self._index(graph)
        self.outputs = {v.name for v in graph.outputs}
        self.inputs = {v.name for v in graph.inputs}
        self.base: dict[tuple[str, int], int] = {}
        self.size: dict[tuple[str, int], int] = {}
        self.parent: list[int] = []
        self.blocked: dict[int, str] = {}  # atom -> reason
        self.axis_block: dict[tuple[str, int], str] = {}
        self.split_atoms: set[int] = set()  # atoms on the head axis of a reshape into heads
        self.seeds: list[tuple[str, int]] = []
        self.queue: deque = deque()
        self.deferred: list = []
        self.done: set = set()
        self.units: list[Unit] = []
        self.groups: list[Group] = []
        self.unit_of: dict[tuple[str, int], np.ndarray] = {}

    # --- indexing -------------------------------------------------------------------------
    def _index(self, g: Graph) -> None:
        for v in g.inputs:
            self.types[v.name] = v.type
        for n in g.nodes:
            self.nodes.append(n)
            for v in n.inputs:
                self._mention(v.name, n)
            for v in n.outputs:
                self.types[v.name] = v.type
                self._mention(v.name, n)
            for r in n.regions:
                self._index(r)
                for v in (*r.inputs, *r.outputs):
                    self._mention(v.name, n)

    def _mention(self, name: str, n: Node) -> None:
        lst = self.mentions.setdefault(name, [])
        if not any(m is n for m in lst):
            lst.append(n)

    # --- atoms ----------------------------------------------------------------------------
    def track(self, t: str, a: int) -> bool:
        """Give axis ``a`` of ``t`` atoms (False when its size is not a known integer)."""
        key = (t, a)
        if key in self.base:
            return True
        d = self.types[t].shape[a]
        if not isinstance(d, int):
            return False
        self.base[key] = len(self.parent)
        self.size[key] = d
        self.parent.extend(range(len(self.parent), len(self.parent) + d))
        self.queue.append(key)
        return True

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def atoms(self, t: str, a: int, pos=None) -> np.ndarray:
        b = self.base[(t, a)]
        return b + (np.arange(self.size[(t, a)]) if pos is None else np.asarray(pos, int))

    def couple(self, ta: str, aa: int, pa, tb: str, ab: int, pb) -> None:
        """Positions ``pa`` of axis ``aa`` of ``ta`` are the same channels as ``pb`` of ``tb``."""
        ok_a, ok_b = self.track(ta, aa), self.track(tb, ab)
        if not (ok_a and ok_b):
            for t, a, ok in ((ta, aa, ok_a), (tb, ab, ok_b)):
                if ok:
                    self.block(t, a, f"coupled to a symbolic dim of %{tb if t == ta else ta}")
            return
        if pa is None:
            pa = np.arange(self.size[(ta, aa)])
        if pb is None:
            pb = np.arange(self.size[(tb, ab)])
        for x, y in zip(self.atoms(ta, aa, pa).tolist(), self.atoms(tb, ab, pb).tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[rx] = ry

    def same(self, ta, aa, tb, ab) -> None:
        self.couple(ta, aa, None, tb, ab, None)

    def block(self, t: str, a: int, reason: str) -> None:
        if not self.track(t, a):
            return
        self.axis_block.setdefault((t, a), reason)

    # --- the walk -------------------------------------------------------------------------
    def run(self) -> "Analysis":
        for n in self.nodes:
            for t, a in weight_axes(n, self.params, output=True):
                if self.track(t, a):
                    self.seeds.append((t, a))
        while True:
            while self.queue:
                t, a = self.queue.popleft()
                self._visit(t, a)
            if not self.deferred:
                break
            pending, self.deferred = self.deferred, []
            progressed = False
            for n, t, a, last in pending:
                before = len(self.parent)
                self._rule(n, t, a, final=last)
                progressed |= len(self.parent) != before or bool(self.queue)
            if not progressed:
                for n, t, a, _ in pending:
                    self._rule(n, t, a, final=True)
        self._collect()
        return self

    def _visit(self, t: str, a: int) -> None:
        if t in self.inputs:
            self.block(t, a, f"it reaches the graph input %{t}")
        if t in self.outputs:
            self.block(t, a, f"it reaches the graph output %{t}")
        if t in self.params:
            users = self.mentions.get(t, [])
            if len(users) > 1:
                self.block(t, a, f"shared weight @{t} ({len(users)} users)")
        for n in self.mentions.get(t, []):
            self._rule(n, t, a)

    def _rule(self, n: Node, t: str, a: int, final: bool = False) -> None:
        key = (id(n), t, a)
        if key in self.done:
            return
        fn = _RULES.get(n.op)
        if fn is None:
            od = OPS.get(n.op)
            fn = _elementwise if od is not None and "elementwise" in od.traits else None
        if fn is None:
            self.done.add(key)
            self._block_node(n, f"{n.op} %{n.name} is not known to keep channels apart")
            return
        result = fn(self, n, t, a, final)
        if result == "defer":
            self.deferred.append((n, t, a, False))
            return
        self.done.add(key)

    def _block_node(self, n: Node, reason: str) -> None:
        for v in (*n.inputs, *n.outputs):
            for ax in range(self.types[v.name].rank):
                if (v.name, ax) in self.base:
                    self.block(v.name, ax, reason)

    # --- results --------------------------------------------------------------------------
    def _collect(self) -> None:
        for key, reason in self.axis_block.items():
            for x in self.atoms(*key).tolist():
                self.blocked.setdefault(self.find(x), reason)
        roots = {}
        for key in self.base:
            rs = np.array([self.find(x) for x in self.atoms(*key).tolist()], int)
            ids = np.empty(len(rs), int)
            for i, r in enumerate(rs.tolist()):
                if r not in roots:
                    roots[r] = len(self.units)
                    self.units.append(Unit(len(self.units), blocked=self.blocked.get(r, "")))
                ids[i] = roots[r]
            self.unit_of[key] = ids
            for u in np.unique(ids).tolist():
                self.units[u].members[key] = np.nonzero(ids == u)[0]
        heads = {roots[self.find(x)] for x in self.split_atoms}
        # groups: units joined by a shared axis
        parent = list(range(len(self.units)))

        def f(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for ids in self.unit_of.values():
            us = np.unique(ids).tolist()
            for u in us[1:]:
                parent[f(u)] = f(us[0])
        by_root: dict[int, list[int]] = {}
        for u in range(len(self.units)):
            by_root.setdefault(f(u), []).append(u)
        seeds = set(self.seeds)
        for us in by_root.values():
            gid = len(self.groups)
            axes = sorted({k for u in us for k in self.units[u].members})
            gseeds = [k for k in axes if k in seeds]
            g = Group(gid, us, axes, gseeds, heads=any(u in heads for u in us),
                      channels=self.size[gseeds[0]] if gseeds else len(us))
            for u in us:
                self.units[u].group = gid
            self.groups.append(g)

    def importance(self, unit: Unit, criterion: str = "l1") -> float:
        """Sum of the unit's weight slices' norms (dot/conv weights; all params if none)."""
        weights = weight_params(self.graph)
        members = [m for m in unit.param_members(self.params) if m[0] in weights] or \
            unit.param_members(self.params)
        total = 0.0
        for t, a, pos in members:
            sl = np.take(np.asarray(self.params[t], np.float64), pos, axis=a)
            total += float(np.abs(sl).sum()) if criterion == "l1" else float(np.sqrt((sl * sl).sum()))
        return total


def _type_of(arr):
    from ..ir import TensorType
    return TensorType.of(arr)


def analyze(graph: Graph) -> Analysis:
    """The coupling analysis of ``graph``: its units and groups."""
    return Analysis(graph).run()


def weight_params(graph: Graph) -> set[str]:
    """Params used as a dot_general operand or a conv kernel."""
    out = set()
    for n in graph.walk():
        if n.op == "dot_general":
            out.update(v.name for v in n.inputs if v.name in graph.params)
        elif n.op == "conv" and n.inputs[1].name in graph.params:
            out.add(n.inputs[1].name)
    return out


def weight_axes(n: Node, params, output: bool) -> list[tuple[str, int]]:
    """(param, axis) of the node's weight along its output (``output``) or reduction axis."""
    out = []
    if n.op == "dot_general":
        (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
        for v, c, b in ((n.inputs[0], lc, lb), (n.inputs[1], rc, rb)):
            if v.name not in params or n.inputs[0].name == n.inputs[1].name:
                continue
            if output:
                out += [(v.name, i) for i in range(v.type.rank) if i not in c and i not in b]
            elif c:
                out.append((v.name, c[0]))
    elif n.op == "conv" and n.inputs[1].name in params:
        rspec = n.attrs["dimension_numbers"][1]
        out.append((n.inputs[1].name, rspec.index("O" if output else "I")))
    return out


# --- coupling rules: fn(analysis, node, tensor, axis, final) --------------------------------
def _slots(n: Node, t: str):
    ins = [i for i, v in enumerate(n.inputs) if v.name == t]
    outs = [j for j, v in enumerate(n.outputs) if v.name == t]
    return ins, outs


def _elementwise(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _broadcast(an: Analysis, n: Node, t: str, a: int, final: bool):
    bd = n.attrs["broadcast_dimensions"]
    x, y = n.inputs[0], n.outputs[0]
    if t == x.name:
        if x.type.shape[a] == y.type.shape[bd[a]]:
            an.same(t, a, y.name, bd[a])
    elif a in bd and x.type.shape[bd.index(a)] == y.type.shape[a]:
        an.same(t, a, x.name, bd.index(a))
    return None


def _transpose(an: Analysis, n: Node, t: str, a: int, final: bool):
    perm = n.attrs["permutation"]
    x, y = n.inputs[0], n.outputs[0]
    if t == x.name:
        an.same(t, a, y.name, list(perm).index(a))
    else:
        an.same(t, a, x.name, perm[a])
    return None


def _reshape(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _concat(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _slice(an: Analysis, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    start, limit = n.attrs["start"][a], n.attrs["limit"][a]
    stride = (n.attrs.get("strides") or (1,) * x.type.rank)[a]
    if stride != 1 or not isinstance(start, int) or not isinstance(limit, int):
        an.block(t, a, f"slice %{n.name} takes a strided or symbolic part of the axis")
        return None
    pos = np.arange(limit - start)
    an.couple(x.name, a, start + pos, y.name, a, pos)
    return None


def _pad(an: Analysis, n: Node, t: str, a: int, final: bool):
    x, y = n.inputs[0], n.outputs[0]
    interior = n.attrs.get("interior") or (0,) * x.type.rank
    if t != x.name and t != y.name:
        return None
    if n.attrs["low"][a] or n.attrs["high"][a] or interior[a]:
        an.block(t, a, f"pad %{n.name} pads the axis")
    else:
        an.same(x.name, a, y.name, a)
    return None


def _reduce(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _axis_op(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _reduce_window(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _batch_norm(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _dot(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _conv(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _composite(an: Analysis, n: Node, t: str, a: int, final: bool):
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


def _constant(an: Analysis, n: Node, t: str, a: int, final: bool):
    return None  # a fill: its shape attribute follows, it has no channels of its own


_RULES = {"broadcast_in_dim": _broadcast, "transpose": _transpose, "reshape": _reshape,
          "concatenate": _concat, "slice": _slice, "pad": _pad, "reduce_window": _reduce_window,
          "batch_norm": _batch_norm, "dot_general": _dot, "conv": _conv, "composite": _composite,
          "constant": _constant, **{op: _reduce for op in _REDUCTIONS},
          **{op: _axis_op for op in _AXIS_OPS}}


# --- applying a decision ------------------------------------------------------------------
def _keep_masks(an: Analysis, remove: set[int]) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for key, ids in an.unit_of.items():
        keep = ~np.isin(ids, list(remove))
        if not keep.all():
            out[key] = keep
    return out


def zero_units(graph: Graph, an: Analysis, remove) -> Graph:
    """The graph with every param slice of the given units set to zero (the masked model)."""
    updates = {}
    for key, keep in _keep_masks(an, set(remove)).items():
        t, a = key
        if t not in graph.params:
            continue
        arr = np.array(updates.get(t, graph.params[t]))
        idx = [slice(None)] * arr.ndim
        idx[a] = ~keep
        arr[tuple(idx)] = 0
        updates[t] = arr
    return graph.with_params(updates)


def nonempty(an: Analysis, remove, importance=None) -> list[int]:
    """``remove`` less the units needed so that no axis loses every position it has."""
    remove = list(dict.fromkeys(remove))
    gone = set(remove)
    for ids in an.unit_of.values():
        if ids.size and all(u in gone for u in ids.tolist()):
            keep = max(set(ids.tolist()), key=lambda u: (importance or {}).get(u, 0.0))
            gone.discard(keep)
    return [u for u in remove if u in gone]


def remove_units(graph: Graph, an: Analysis, remove) -> Graph:
    """The graph with the given units removed: params sliced, shape attributes set, re-typed."""
    keeps = _keep_masks(an, set(remove))
    params = dict(graph.params)
    for (t, a), keep in keeps.items():
        if t in params:
            params[t] = np.ascontiguousarray(np.compress(keep, np.asarray(params[t]), axis=a))
    sizes: dict[str, dict[int, int]] = {}
    for (t, a), keep in keeps.items():
        sizes.setdefault(t, {})[a] = int(keep.sum())

    def retype(v: Value) -> Value:
        if v.name not in sizes:
            return v
        shape = list(v.type.shape)
        for a, d in sizes[v.name].items():
            shape[a] = d
        return Value(v.name, v.type.with_shape(tuple(shape)))

    def edit(g: Graph) -> Graph:
        nodes = []
        for n in g.nodes:
            m = _edit(n, keeps)
            nodes.append(m.replace(inputs=tuple(retype(v) for v in m.inputs),
                                   outputs=tuple(retype(v) for v in m.outputs),
                                   regions=tuple(edit(r) for r in m.regions)))
        return g.replace(inputs=tuple(retype(v) for v in g.inputs), nodes=tuple(nodes),
                         outputs=tuple(retype(v) for v in g.outputs))

    # Every coupled axis gets its new size directly: the analysis knows them all, where
    # re-inference would have to guess which part of a sliced axis to keep.
    return edit(graph).replace(params=params, annotations=_sliced_annotations(graph, keeps))


def _sliced_annotations(graph: Graph, keeps) -> tuple:
    """Annotations whose payload has its target's shape (masks) sliced like the target."""
    out = []
    for ann in graph.annotations:
        arr = ann.array
        cut = [(a, k) for (t, a), k in keeps.items() if t == ann.target]
        target_type = an_type(graph, ann.target)
        if arr is not None and cut and target_type is not None and arr.shape == tuple(target_type.shape):
            arr = np.asarray(arr)
            for a, k in cut:
                arr = np.compress(k, arr, axis=a)
            ann = type(ann)(ann.target, ann.kind, ann.attrs, np.ascontiguousarray(arr))
        out.append(ann)
    return tuple(out)


def an_type(graph: Graph, name: str):
    """The type of param or value ``name`` in ``graph`` (None when it has none)."""
    if name in graph.params:
        return _type_of(graph.params[name])
    for v in graph.inputs:
        if v.name == name:
            return v.type
    n = graph.producers.get(name)
    return None if n is None else next(o.type for o in n.outputs if o.name == name)


def _edit(n: Node, keeps) -> Node:
    regions = n.regions
    attrs = dict(n.attrs)
    out = n.outputs[0].name if n.outputs else ""
    changed = {a: k for (t, a), k in keeps.items() if t == out}
    if n.op in ("reshape", "broadcast_in_dim", "constant", "iota") and changed and "shape" in attrs:
        shape = list(attrs["shape"])
        for a, k in changed.items():
            shape[a] = int(k.sum())
        attrs["shape"] = tuple(shape)
    if n.op == "slice":
        x = n.inputs[0].name
        start, limit = list(attrs["start"]), list(attrs["limit"])
        for (t, a), k in keeps.items():
            if t == x:
                start[a] = int(k[:start[a]].sum())
                limit[a] = start[a] + int(k[n.attrs["start"][a]:n.attrs["limit"][a]].sum())
        attrs["start"], attrs["limit"] = tuple(start), tuple(limit)
    if n.op == "conv" and n.attrs.get("feature_group_count", 1) != 1:
        lspec = n.attrs["dimension_numbers"][0]
        key = (n.inputs[0].name, lspec.index("C"))
        cin = n.inputs[0].type.shape[lspec.index("C")]
        if key in keeps and n.attrs["feature_group_count"] == cin:  # depthwise stays depthwise
            attrs["feature_group_count"] = int(keeps[key].sum())
    if attrs == dict(n.attrs) and all(a is b for a, b in zip(regions, n.regions)):
        return n
    return n.replace(attrs=attrs, regions=regions)
