"""Re-inference: recompute every type after a shape change, and carry shape attributes along.

A pass that changes a shape (structured pruning slices a weight, a caller sets a new input
shape) calls ``infer_types(graph)`` and gets a graph whose every value type is recomputed, in
order, from the graph inputs and the *current* params through the op registry's type rules;
region bodies are re-inferred from what feeds them. Attributes that carry shapes follow the
change (a flatten's target follows a new channel count, a bias broadcast follows its operand,
a constant fill or iota follows the dim it is combined with, a mean's literal element count
is recounted); a node that cannot follow is an ``InferenceError`` naming it. Nothing here mutates the graph it is given.

An iota resized along its own axis counts 0..n-1 at the new size: right when a length
changed (sequence, batch, image size), not when particular channels were removed; a pruning
pass that keeps an iota over pruned channels slices it itself.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from .graph import Attrs, Graph, Node, Value, freeze_attr
from .registry import OPS, OpTypeError
from .types import TensorType, dim_symbols, dims_equal, eval_dim, shape_numel
from .verify import VerificationError, describe, node_output_types, types_match

__all__ = ["InferenceError", "infer_types", "retype_node"]

_MAX_ROUNDS = 64  # re-runs to size constant fills; each run adds at least one new (node, axis)


class InferenceError(VerificationError):
    """A node cannot follow a shape change; names the node, the input that changed and why."""

    def __init__(self, message: str, node: Node | None = None):
        super().__init__(message, node, "infer")


class _CannotFollow(Exception):
    """Raised by an attribute follower: the why of an InferenceError."""


class _Restart(Exception):
    """New sizes for constant fills were found: run inference again with them."""


ParamTypes = Callable[[str], "TensorType | None"]


def infer_types(graph: Graph) -> Graph:
    """A new graph whose types are recomputed from its inputs and params (see module doc)."""
    from .dims import assuming
    types = {k: TensorType.of(v) for k, v in graph.params.items()}
    resize: dict[str, dict[int, object]] = {}
    recount: dict[str, object] = {}
    for _ in range(_MAX_ROUNDS):
        inf = _Inferer(types.get, resize, _producers(graph), recount)
        try:
            with assuming(graph.requires):  # the type rules may rely on what the model requires
                return inf.graph(graph, graph.inputs, root=True)
        except _Restart:
            continue
    raise InferenceError(f"graph @{graph.name}: type inference did not settle after "
                         f"{_MAX_ROUNDS} rounds of resizing constant fills")


def retype_node(node: Node, inputs: Sequence[Value], param_type: ParamTypes) -> Node:
    """``node`` re-inferred for new ``inputs`` (one step of ``infer_types``, for the driver).

    Raises InferenceError when the node cannot follow on its own, including when a constant
    fill upstream would have to be resized: only ``infer_types`` resizes those.
    """
    # Without producers no constant fill upstream can be found to resize, so no restart.
    env = {v.name: new for v, new in zip(node.inputs, inputs)}
    return _Inferer(param_type, {}, {}).node(node, env, "")


def _producers(g: Graph) -> dict[str, Node]:
    return {o.name: n for n in g.walk() for o in n.outputs}


class _Inferer:
    """One forward run over a graph; ``resize`` holds the constant-fill sizes found so far."""

    def __init__(self, param_type: ParamTypes, resize: dict, producers: Mapping[str, Node],
                 recount: dict | None = None):
        self.param_type = param_type
        self.resize = resize
        self.producers = producers
        self.recount = {} if recount is None else recount  # constant -> new element count

    # --- graphs and nodes ----------------------------------------------------------------
    def graph(self, g: Graph, inputs: Sequence[Value], root: bool = False) -> Graph:
        where = "" if root else f"in region ^{g.name}: "
        env = {old.name: new for old, new in zip(g.inputs, inputs)}
        nodes = []
        for n in g.nodes:
            nodes.append(self.node(n, env, where))
            env.update((o.name, o) for o in nodes[-1].outputs)
        outputs = tuple(self.lookup(v, env, None, where) for v in g.outputs)
        if (all(a is b for a, b in zip(nodes, g.nodes)) and _same_values(inputs, g.inputs)
                and _same_values(outputs, g.outputs)):
            return g
        return g.replace(inputs=tuple(inputs), nodes=tuple(nodes), outputs=outputs)

    def lookup(self, v: Value, env: Mapping[str, Value], n: Node | None, where: str) -> Value:
        if v.name in env:
            return env[v.name]
        t = self.param_type(v.name)
        if t is None:
            at = f"{describe(n)}: " if n is not None else ""
            raise InferenceError(f"{where}{at}%{v.name} is not defined", n)
        return v if types_match(v.type, t) else Value(v.name, t)

    def node(self, n: Node, env: dict, where: str) -> Node:
        ins = tuple(self.lookup(v, env, n, where) for v in n.inputs)
        changed = [not types_match(a.type, b.type) for a, b in zip(n.inputs, ins)]
        attrs = n.attrs
        try:
            if any(changed) and n.op in _FOLLOW and not _was_edited(n):
                attrs = _FOLLOW[n.op](n, [v.type for v in ins], attrs)
            resized = {o.name: self.resize[o.name] for o in n.outputs if o.name in self.resize}
            if resized:
                attrs = _apply_resize(n, attrs, resized[n.outputs[0].name])
            if n.outputs and n.outputs[0].name in self.recount:
                attrs = attrs.set(value=self.recount[n.outputs[0].name])
            if n.op in ("div", "mul") and len(n.inputs) == 2:
                self.recount_mean(n, env, where)
            regions = self.regions(n, ins, attrs, where)
        except _CannotFollow as e:
            raise InferenceError(f"{where}{describe(n)}: cannot follow {_changes(n, ins)}: {e}",
                                 n) from None
        proto = n.replace(inputs=ins, attrs=attrs, regions=regions, outputs=())
        try:
            types = node_output_types(proto)
        except OpTypeError as e:
            if any(changed) and self.request_resizes(n, ins, changed):
                raise _Restart() from None
            what = _changes(n, ins) if any(changed) else "its inputs"
            hint = self.hint(n, ins, changed, env)
            raise InferenceError(f"{where}{describe(n)}: cannot follow {what}: {e}{hint}",
                                 n) from None
        if any(changed):
            self.refuse_new_broadcasts(n, ins, changed, types[0] if types else None, where)
        if len(types) != len(n.outputs):
            raise InferenceError(f"{where}{describe(n)}: the type rule gives {len(types)} outputs, "
                                 f"the node has {len(n.outputs)}", n)
        outs = tuple(o if types_match(o.type, t) else Value(o.name, t)
                     for o, t in zip(n.outputs, types))
        if attrs is not n.attrs and attrs == n.attrs:
            attrs = n.attrs
        if (_same_values(ins, n.inputs) and attrs is n.attrs and _same_values(outs, n.outputs)
                and all(a is b for a, b in zip(regions, n.regions))):
            return n
        return n.replace(inputs=ins, attrs=attrs, regions=regions, outputs=outs)

    def regions(self, n: Node, ins: Sequence[Value], attrs: Attrs, where: str) -> tuple[Graph, ...]:
        """The node's regions re-inferred for what it feeds them."""
        if not n.regions:
            return n.regions
        feeds = _region_feeds(n, [v.type for v in ins], attrs)
        out = []
        for r, types in zip(n.regions, feeds):
            if len(types) != len(r.inputs):
                raise _CannotFollow(f"region ^{r.name} takes {len(r.inputs)} values, "
                                    f"the node passes {len(types)}")
            inputs = [v if types_match(v.type, t) else Value(v.name, t) for v, t in zip(r.inputs, types)]
            out.append(self.graph(r, inputs))
        return tuple(out)

    def hint(self, n: Node, ins: Sequence[Value], changed: Sequence[bool], env) -> str:
        """A suggestion naming the unchanged operand (and where its size comes from)."""
        for group in _couplings(n, [v.type for v in ins]):
            target = _changed_dim(group, n, ins, changed)
            for i, axis in group if target is not None else ():
                d = ins[i].type.shape[axis]
                if not changed[i] and d != 1 and not dims_equal(d, target):
                    _, src, src_axis = self.trace_dim(n.inputs[i].name, axis)
                    origin = f" (from dim {src_axis} of {_sigil(src, env)})" if src != ins[i].name else ""
                    return (f" ({_sigil(ins[i].name, env)} still has {d} in dim {axis}{origin} "
                            f"where the changed input now has {target}: change it too)")
        return ""

    def refuse_new_broadcasts(self, n: Node, ins, changed, out: TensorType | None, where: str):
        """An element-wise input dim that shrank to 1 must not start broadcasting silently."""
        od = OPS.get(n.op)
        if out is None or od is None or "elementwise" not in od.traits:
            return
        for k, group in enumerate(_couplings(n, [v.type for v in ins])):
            for i, axis in group:
                was = n.inputs[i].type
                if not (changed[i] and ins[i].type.shape[axis] == 1 and was.rank == ins[i].type.rank
                        and was.shape[axis] != 1 and out.shape[k] != 1):
                    continue
                asked = False
                for j, ax in group:  # a constant fill partner can shrink to 1 as well
                    src = self.free_source(n.inputs[j].name, ax) if j != i else None
                    if src is not None and ins[j].type.shape[ax] != 1:
                        asked |= self.resize.setdefault(src[0], {}).setdefault(src[1], 1) == 1
                if asked:
                    raise _Restart()
                raise InferenceError(
                    f"{where}{describe(n)}: cannot follow {_changes(n, ins)}: dim {axis} of "
                    f"%{ins[i].name} shrank from {was.shape[axis]} to 1 and would now broadcast "
                    f"to {out.shape[k]}; change the other operands too", n)

    def recount_mean(self, n: Node, env, where: str) -> None:
        """A mean's constant divisor (or 1/n factor) follows the new count of reduced elements.

        Frontends write a mean over static dims as ``reduce_sum`` then a division by the
        element count as a literal: a value computed from a shape, which a shape change
        leaves stale unless it is recounted here.
        """
        if n.op == "div":
            total, const = n.inputs
        else:
            const, total = sorted(n.inputs, key=lambda v: v.type.rank)
        c = self.producers.get(const.name)
        r = self.producers.get(total.name)
        while r is not None and r.op in ("broadcast_in_dim", "reshape", "expand_dims", "convert"):
            r = self.producers.get(r.inputs[0].name)
        if (c is None or c.op != "constant" or const.type.rank != 0 or r is None
                or r.op != "reduce_sum" or r.inputs[0].name not in env):
            return
        old_in, new_in = r.inputs[0].type, env[r.inputs[0].name].type
        axes = [a % max(old_in.rank, 1) for a in r.attrs["axes"]]
        if old_in.rank != new_in.rank or not axes:
            return
        old, new = shape_numel([old_in.shape[a] for a in axes]), shape_numel([new_in.shape[a] for a in axes])
        value = c.attrs["value"]
        if (not isinstance(old, int) or isinstance(value, bool) or not isinstance(value, (int, float))
                or dims_equal(old, new)):
            return
        want = float(old) if n.op == "div" else 1.0 / old
        if abs(value - want) > 1e-6 * abs(want):
            return  # not this mean's count: a real constant
        if not isinstance(new, int):
            raise InferenceError(
                f"{where}{describe(n)}: cannot follow {_changes(r, [env[r.inputs[0].name]])}: "
                f"it divides a sum over {old} elements (dims {tuple(axes)}) by the literal "
                f"{value}, and the count is now {new}, which a literal cannot hold (import the "
                "model with symbolic dims so the frontend computes the count)", n)
        if c.outputs[0].name not in self.recount:
            self.recount[c.outputs[0].name] = float(new) if n.op == "div" else 1.0 / new
            raise _Restart()

    # --- constant fills that follow a changed partner ------------------------------------
    def request_resizes(self, n: Node, ins: Sequence[Value], changed: Sequence[bool]) -> bool:
        """Ask for constant fills coupled to a changed dim of ``n`` to take the new size."""
        new = False
        for group in _couplings(n, [v.type for v in ins]):
            target = _changed_dim(group, n, ins, changed)
            if target is None:
                continue
            for i, axis in group:
                d = ins[i].type.shape[axis]
                if d == 1 or dims_equal(d, target):
                    continue
                src = self.free_source(n.inputs[i].name, axis)
                if src is None:
                    continue
                sizes = self.resize.setdefault(src[0], {})
                if src[1] in sizes:
                    continue  # already asked for (with whatever size came first): no loop
                sizes[src[1]] = target
                new = True
        return new

    def free_source(self, name: str, axis: int):
        """The (node output, axis) whose size is a free attribute and sets ``name``'s ``axis``."""
        free, src, src_axis = self.trace_dim(name, axis)
        return (src, src_axis) if free else None

    def trace_dim(self, name: str, axis: int) -> tuple[bool, str, int]:
        """Where ``name``'s ``axis`` gets its size: (is a free attribute, value, axis).

        Walks back through broadcasts, transposes and element-wise ops on one full-rank operand;
        the walk ends at a constant fill or iota (free), or at any other value (a param, an
        input, an op's result) that fixes the size.
        """
        n = self.producers.get(name)
        if n is None:
            return False, name, axis
        if n.op in ("constant", "iota"):
            return True, name, axis
        if n.op == "broadcast_in_dim":
            dims = n.attrs["broadcast_dimensions"]
            if axis in dims and n.inputs[0].type.shape[dims.index(axis)] != 1:
                return self.trace_dim(n.inputs[0].name, dims.index(axis))
            return True, name, axis
        if n.op == "transpose":
            return self.trace_dim(n.inputs[0].name, n.attrs["permutation"][axis])
        od = OPS.get(n.op)
        if od is not None and "elementwise" in od.traits:
            full = [v for v in n.inputs if v.type.rank == n.outputs[0].type.rank]
            if len(full) == 1 and all(v.type.rank == 0 for v in n.inputs if v is not full[0]):
                return self.trace_dim(full[0].name, axis)
        return False, name, axis


def _sigil(name: str, env) -> str:
    return ("%" if name in env else "@") + name


def _same_values(a: Sequence[Value], b: Sequence[Value]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b))


def _changes(n: Node, ins: Sequence[Value]) -> str:
    """'input %x changed from f32[8,32] to f32[8,24]' for each input whose type changed."""
    parts = [f"%{old.name} changed from {old.type} to {new.type}"
             for old, new in zip(n.inputs, ins) if not types_match(old.type, new.type)]
    return "input " + "; input ".join(parts) if parts else "its regions"


def _changed_dim(group, n: Node, ins: Sequence[Value], changed: Sequence[bool]):
    """The one new size the changed inputs agree on in a coupled group (None if none/several)."""
    sizes = []
    for i, axis in group:
        if not changed[i]:
            continue
        was, new = n.inputs[i].type, ins[i].type.shape[axis]
        if new != 1 and (was.rank != ins[i].type.rank or not dims_equal(was.shape[axis], new)):
            sizes.append(new)
    if not sizes or any(not dims_equal(s, sizes[0]) for s in sizes[1:]):
        return None
    return sizes[0]


def _couplings(n: Node, types: Sequence[TensorType]) -> list[list[tuple[int, int]]]:
    """Groups of (input index, axis) whose sizes the op's rule requires to agree."""
    od = OPS.get(n.op)
    if od is None:
        return []
    if "elementwise" in od.traits:
        rank = max((t.rank for t in types), default=0)
        return [[(i, k - (rank - t.rank)) for i, t in enumerate(types) if k - (rank - t.rank) >= 0]
                for k in range(rank)]
    if n.op == "concatenate":
        rank, axis = types[0].rank, n.attrs["axis"] % max(types[0].rank, 1)
        return [[(i, k) for i in range(len(types))] for k in range(rank) if k != axis]
    if n.op == "dot_general":
        (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
        return [[(0, a), (1, b)] for a, b in list(zip(lc, rc)) + list(zip(lb, rb))]
    if n.op == "batch_norm":
        axis = n.attrs.get("axis", 1) % max(types[0].rank, 1)
        return [[(0, axis)] + [(i, 0) for i in range(1, len(types))]]
    return []


# --- region feeds: the types each region of a node takes ---------------------------------
def _region_feeds(n: Node, ins: Sequence[TensorType], attrs: Attrs) -> list[list[TensorType]]:
    if n.op == "composite":
        return [list(ins)]
    if n.op == "cond":
        return [list(ins[1:])] * len(n.regions)
    if n.op == "while_loop":
        return [list(ins)] * len(n.regions)
    if n.op == "scan":
        nc, nx = attrs["num_carry"], attrs["num_xs"]
        xs = [t.with_shape(t.shape[1:]) for t in ins[nc:nc + nx]]
        return [list(ins[:nc]) + xs + list(ins[nc + nx:])]
    if all(types_match(a.type, b) for a, b in zip(n.inputs, ins)):
        return [[v.type for v in r.inputs] for r in n.regions]
    raise _CannotFollow(f"op {n.op!r} has regions whose inputs are not known to follow its operands")


# --- attribute followers: op -> fn(node, new input types, attrs) -> attrs ------------------
def _attr_dim(d):
    """A dim as an attribute value (a symbolic dim goes in as its text if attrs refuse it)."""
    try:
        return freeze_attr(d)
    except TypeError:
        return str(d)


def _was_edited(n: Node) -> bool:
    """True when a pass already set this node's attributes for its new inputs.

    Such a node's attributes no longer fit the types it was built with: the old inputs do not
    give the old outputs under them. Its attributes are then the pass's intent and are kept.
    """
    try:
        types = node_output_types(n)
    except OpTypeError:
        return True
    return not (len(types) == len(n.outputs)
                and all(types_match(t, o.type) for t, o in zip(types, n.outputs)))


def _sample(d) -> int:
    """A size to order dims by when grouping (symbols taken as large)."""
    if isinstance(d, int):
        return d
    return eval_dim(d, {s: 10007 for s in dim_symbols(d)})


def reshape_groups(src, dst) -> list[tuple[list[int], list[int]]]:
    """Pair runs of ``src`` axes with runs of ``dst`` axes holding the same elements.

    ``[N,4,4,32] -> [N,512]`` gives ``([0],[0]), ([1,2,3],[1])``. A size-1 dim is a group of
    its own (with no partner when only one side has it).
    """
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        a1 = i < len(src) and src[i] == 1
        b1 = j < len(dst) and dst[j] == 1
        if a1 or b1:
            groups.append(([i] if a1 else [], [j] if b1 else []))
            i, j = i + a1, j + b1
            continue
        if i >= len(src) or j >= len(dst):
            raise _CannotFollow(f"reshape from {_fmt(src)} to {_fmt(dst)} keeps no element count")
        gi, gj = [i], [j]
        i, j = i + 1, j + 1
        while not dims_equal(shape_numel([src[k] for k in gi]), shape_numel([dst[k] for k in gj])):
            smaller_src = _sample(shape_numel([src[k] for k in gi])) < _sample(
                shape_numel([dst[k] for k in gj]))
            if i < len(src) and (smaller_src or j >= len(dst)):
                gi.append(i)
                i += 1
            elif j < len(dst):
                gj.append(j)
                j += 1
            else:
                raise _CannotFollow(f"reshape from {_fmt(src)} to {_fmt(dst)} keeps no element count")
        groups.append((gi, gj))
    return groups


def _fmt(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _follow_reshape(n: Node, ins, attrs):
    old, new = n.inputs[0].type.shape, ins[0].shape
    out = list(n.outputs[0].type.shape)
    for gi, gj in reshape_groups(old, out):
        if all(dims_equal(old[k], new[k]) for k in gi):
            continue
        if len(gj) != 1:
            was = ",".join(str(old[k]) for k in gi)
            now = ",".join(str(new[k]) for k in gi)
            into = ",".join(str(out[k]) for k in gj) if gj else "nothing"
            raise _CannotFollow(f"the reshape to {_fmt(attrs['shape'])} splits dim(s) [{was}] into "
                                f"[{into}] and which factor should take the new size [{now}] is "
                                "not known; set the reshape's shape for the new input first")
        out[gj[0]] = shape_numel([new[k] for k in gi])
    return attrs.set(shape=tuple(_attr_dim(d) for d in out))


def _follow_broadcast(n: Node, ins, attrs):
    old, new = n.inputs[0].type.shape, ins[0].shape
    shape = list(attrs["shape"])
    for i, d in enumerate(attrs["broadcast_dimensions"]):
        # A changed operand dim sets the output dim, even a new 1: keeping the old size
        # would broadcast the one remaining row where the operand used to map one to one.
        if not dims_equal(old[i], new[i]):
            shape[d] = _attr_dim(new[i])
    return attrs.set(shape=tuple(shape))


def _full_or_fail(what: str, i: int, old, new, covers_all: bool):
    if not covers_all:
        raise _CannotFollow(f"{what} takes part of dim {i}, which changed from {old} to {new}; "
                            "which part to keep is not known: set its bounds for the new input first")


def _follow_slice(n: Node, ins, attrs):
    old, new = n.inputs[0].type.shape, ins[0].shape
    start, limit = list(attrs["start"]), list(attrs["limit"])
    strides = attrs.get("strides") or (1,) * len(old)
    for i, (o, d) in enumerate(zip(old, new)):
        if dims_equal(o, d):
            continue
        _full_or_fail(f"slice [{start[i]}:{limit[i]}:{strides[i]}]", i, o, d,
                      start[i] == 0 and strides[i] == 1 and dims_equal(limit[i], o))
        limit[i] = _attr_dim(d)
    return attrs.set(limit=tuple(limit))


def _follow_dynamic_slice(n: Node, ins, attrs):
    old, new = n.inputs[0].type.shape, ins[0].shape
    sizes = list(attrs["sizes"])
    for i, (o, d) in enumerate(zip(old, new)):
        if not dims_equal(o, d):
            _full_or_fail(f"dynamic_slice of size {sizes[i]}", i, o, d, dims_equal(sizes[i], o))
            sizes[i] = _attr_dim(d)
    return attrs.set(sizes=tuple(sizes))


def _axis_dims(n: Node, ins, default: int = -1):
    """The old and new size of the input's dim along the node's ``axis`` attribute."""
    axis = n.attrs.get("axis", default) % max(ins[0].rank, 1)
    return n.inputs[0].type.shape[axis], ins[0].shape[axis]


def _follow_top_k(n: Node, ins, attrs):
    old, new = _axis_dims(n, ins)
    if not dims_equal(old, new) and dims_equal(attrs["k"], old):
        if not isinstance(new, int):
            raise _CannotFollow(f"top_k takes all {old} along its axis, now {new}, which is not static")
        return attrs.set(k=new)  # a full sort stays a full sort
    return attrs


def _follow_fft(n: Node, ins, attrs):
    old, new = _axis_dims(n, ins, default=0)
    if not dims_equal(old, new) and attrs["kind"] in ("fft", "ifft", "rfft") and attrs["length"] == old:
        if not isinstance(new, int):
            raise _CannotFollow(f"fft over the whole axis ({old}) now of {new}, which is not static")
        return attrs.set(length=new)
    return attrs


def _follow_reduce_window(n: Node, ins, attrs):
    old, new = n.inputs[0].type.shape, ins[0].shape
    win = list(attrs["window_dimensions"])
    strides = list(attrs.get("window_strides") or (1,) * len(old))
    for i, (o, d) in enumerate(zip(old, new)):
        if not dims_equal(o, d) and win[i] == o and o != 1:  # a global pool stays global
            if not isinstance(d, int):
                raise _CannotFollow(f"reduce_window over all of dim {i} ({o}), now {d}, which "
                                    "is not static")
            win[i] = d
            strides[i] = d if strides[i] == o else strides[i]
    changes = {"window_dimensions": tuple(win)}
    if attrs.get("window_strides") is not None:
        changes["window_strides"] = tuple(strides)
    return attrs.set(**changes)


def _follow_conv(n: Node, ins, attrs):
    lspec = attrs["dimension_numbers"][0]
    c = lspec.index("C")
    old, new = n.inputs[0].type.shape[c], ins[0].shape[c]
    groups = attrs.get("feature_group_count", 1)
    if groups != 1 and not dims_equal(old, new) and dims_equal(groups, old) and isinstance(new, int):
        return attrs.set(feature_group_count=new)  # depthwise stays depthwise
    return attrs


def _follow_scan(n: Node, ins, attrs):
    nc, nx = attrs["num_carry"], attrs["num_xs"]
    for old, new in zip(n.inputs[nc:nc + nx], ins[nc:nc + nx]):
        if new.rank and not dims_equal(old.type.shape[0], new.shape[0]):
            if not isinstance(new.shape[0], int) and OPS["scan"].attr_spec("length").kind == "int":
                raise _CannotFollow(f"scan length follows %{old.name}, now {new}, whose leading "
                                    "dim is not static")
            return attrs.set(length=_attr_dim(new.shape[0]))
    return attrs


_FOLLOW: dict[str, Callable] = {
    "reshape": _follow_reshape,
    "broadcast_in_dim": _follow_broadcast,
    "slice": _follow_slice,
    "dynamic_slice": _follow_dynamic_slice,
    "top_k": _follow_top_k,
    "fft": _follow_fft,
    "reduce_window": _follow_reduce_window,
    "conv": _follow_conv,
    "scan": _follow_scan,
}


def _apply_resize(n: Node, attrs: Attrs, sizes: Mapping[int, object]) -> Attrs:
    """A constant fill, iota or broadcast's free output dims set to the sizes asked for."""
    shape = list(attrs.get("shape", ()))
    for axis, d in sizes.items():
        shape[axis] = _attr_dim(d)
    return attrs.set(shape=tuple(shape))
