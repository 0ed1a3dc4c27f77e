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
from ..ir.registry import OPS
from .prune_rules import RULES, elementwise

__all__ = ["Analysis", "Unit", "Group", "analyze", "nonempty", "remove_units", "zero_units",
           "weight_axes", "weight_params"]



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
        fn = RULES.get(n.op)
        if fn is None:
            od = OPS.get(n.op)
            fn = elementwise if od is not None and "elementwise" in od.traits else None
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
