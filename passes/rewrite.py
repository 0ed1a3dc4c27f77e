"""The one pattern-rewrite driver: patterns match a node and replace its outputs, to a fixpoint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..ir import Graph, Node, TensorType, Value, make_node
from ..ir.annotations import Annotation
from ..ir.infer import InferenceError, infer_types, retype_node
from ..ir.verify import types_match
from .context import PassContext


@dataclass(frozen=True)
class Pattern:
    """A named local rewrite: ``fn(rw, node)`` returns True after calling ``rw.replace``."""

    name: str
    fn: Callable[["Rewriter", Node], bool | None]
    ops: frozenset[str] | None = None  # root ops to try (None: every node)


def pattern(name: str, ops: Iterable[str] | str | None = None):
    """Decorator form: ``@pattern("fold-mul-one", ops="mul") def f(rw, node): ...``."""
    root = frozenset([ops] if isinstance(ops, str) else ops) if ops is not None else None
    return lambda fn: Pattern(name, fn, root)


class Rewriter:
    """The view a pattern gets of the graph while the driver sweeps it."""

    def __init__(self, graph: Graph, ctx: PassContext | None, seen_remarks: set | None = None):
        self.graph = graph
        self.ctx = ctx
        self.state: dict = {}  # scratch space patterns may keep for one sweep (e.g. CSE's table)
        # Shared by the sweeps of one apply_patterns call, so a near-miss is reported once,
        # not once per sweep to the fixpoint.
        self.seen_remarks = set() if seen_remarks is None else seen_remarks
        self.namer = graph.namer()
        self.params = dict(graph.params)
        self.new_nodes: list[Node] = []
        self.subst: dict[str, Value] = {}
        self.producers: dict[str, Node] = {}
        # Kept current through the sweep: a replaced node stops using its inputs, the users of
        # a replaced value move to its replacement, and committed new nodes are added. A user
        # listed here is the node as it was when it was added (its inputs may since resolve
        # elsewhere); its name, op and attrs are what a pattern should rely on.
        self.users: dict[str, list[Node]] = {k: list(v) for k, v in graph.users.items()}
        self.outputs = {v.name for v in graph.outputs}
        self.changed = False
        self.current_pattern = ""
        # Values whose type changed after a ``replace(..., retype=True)``: same name, new type.
        self.retyped: dict[str, Value] = {}
        self.retype_any = False  # a retype happened: the sweep ends with a full infer_types
        # The annotation table (masks, quant params), carried as values are replaced.
        self.notes: dict[tuple[str, str], Annotation] = {a.key: a for a in graph.annotations}

    # --- queries -----------------------------------------------------------------------
    def producer(self, v: Value) -> Node | None:
        """The node defining ``v`` (None for inputs and params)."""
        return self.producers.get(v.name)

    def num_uses(self, v: Value) -> int:
        """Reads of ``v`` by live nodes, plus one when it is a graph output; exact mid-sweep."""
        v = self.resolve(v)
        return len(self.users.get(v.name, ())) + (v.name in self.outputs)

    def is_param(self, v: Value) -> bool:
        return v.name in self.params

    def param_array(self, v: Value) -> np.ndarray | None:
        return self.params.get(v.name)

    def constant_value(self, v: Value):
        """The scalar of a ``constant`` node or a single-valued param, else None."""
        n = self.producer(v)
        if n is not None and n.op == "constant":
            return n.attrs["value"]
        arr = self.params.get(v.name)
        if arr is not None and arr.size and not getattr(arr, "abstract", False):
            flat = arr.reshape(-1)
            # Real weights differ early: probe two elements before scanning a big array.
            if flat[-1] == flat[0] and flat[flat.size // 2] == flat[0] and (flat == flat[0]).all():
                return flat[0].item()
        return None

    # --- edits -------------------------------------------------------------------------
    def op(self, op: str, *inputs: Value, regions: Sequence[Graph] = (), loc: str = "", **attrs):
        """Create a node placed before the node being rewritten; returns its output(s)."""
        n = make_node(op, inputs, self.namer, regions=regions, loc=loc, **attrs)
        self.new_nodes.append(n)
        self.producers.update({o.name: n for o in n.outputs})
        return n.outputs[0] if len(n.outputs) == 1 else n.outputs

    def add_param(self, array: np.ndarray, hint: str = "const") -> Value:
        """A new weight (e.g. a folded constant); returns a value referring to it."""
        from ..ir.graph import Namer
        name = Namer(self.namer.taken, hint)() if hint in self.namer.taken or hint == "const" else hint
        self.namer.reserve(name)
        self.params[name] = array
        return Value(name, TensorType.of(array))

    def remove_param(self, name: str) -> np.ndarray:
        """Forget a param (one a pattern made this sweep and no longer needs); frees its name."""
        self.namer.taken.discard(name)
        for key in [k for k in self.notes if k[0] == name]:
            del self.notes[key]
        return self.params.pop(name)

    # --- annotations -------------------------------------------------------------------
    def annotations(self, target: Value | str) -> list[Annotation]:
        """The annotations on a param or value (masks, quant params...)."""
        name = target if isinstance(target, str) else self.resolve(target).name
        return [a for k, a in self.notes.items() if k[0] == name]

    def annotate(self, target: Value | str, kind: str, attrs: dict | None = None,
                 array: np.ndarray | None = None) -> Annotation:
        """Attach (or replace) the ``kind`` annotation of a param or value."""
        name = target if isinstance(target, str) else self.resolve(target).name
        a = Annotation(name, kind, attrs or {}, array)
        self.notes.pop(a.key, None)
        self.notes[a.key] = a
        return a

    def carry_annotations(self, old: Value | str, new: Value | str,
                          kinds: Sequence[str] | None = None) -> None:
        """Copy ``old``'s annotations to ``new`` (a weight rebuilt from another one)."""
        new_name = new if isinstance(new, str) else new.name
        for a in self.annotations(old):
            if (kinds is None or a.kind in kinds) and (new_name, a.kind) not in self.notes:
                self.notes[(new_name, a.kind)] = a.retarget(new_name)

    def replace(self, node: Node, values: Sequence[Value] | Value, retype: bool = False) -> bool:
        """Route every use of ``node``'s outputs to ``values``.

        The types must match unless ``retype``: then the users downstream are re-inferred for
        the new types (shape attributes follow, see ``ir.infer_types``) as the sweep reaches
        them, and the sweep ends with a full ``infer_types`` of the graph.
        """
        values = [values] if isinstance(values, Value) else list(values)
        if len(values) != len(node.outputs):
            raise ValueError(f"{self.current_pattern}: replacing %{node.name} needs "
                             f"{len(node.outputs)} values, got {len(values)}")
        for old, new in zip(node.outputs, values):
            if old.type != new.type and not types_match(old.type, new.type):
                if not retype:
                    raise ValueError(f"pattern '{self.current_pattern}' replaced %{old.name}: "
                                     f"{old.type} with %{new.name}: {new.type} (pass retype=True "
                                     "to let the users follow the new type)")
                self.retype_any = True
            self.subst[old.name] = new
        self._forget_reads(node)  # ``node`` is dead now: it no longer reads its inputs
        for old, new in zip(node.outputs, values):
            new = self.resolve(new)
            if old.type == new.type:  # the same tensor under another name keeps its facts
                self.carry_annotations(old.name, new.name)
            self.users.setdefault(new.name, []).extend(self.users.pop(old.name, ()))
            if old.name in self.outputs:
                self.outputs.discard(old.name)
                self.outputs.add(new.name)
        self.changed = True
        return True

    def erase(self, node: Node) -> None:
        """A node a rewrite left dead: its reads stop counting in ``num_uses`` (the sweep's
        ``remove_dead`` drops it)."""
        self._forget_reads(node)

    def _commit(self, nodes: Sequence[Node]) -> None:
        """Nodes a firing pattern made join the graph: count their reads."""
        for n in nodes:
            for v in (*n.inputs, *n.region_reads):
                self.users.setdefault(self.resolve(v).name, []).append(n)

    def _forget_reads(self, node: Node) -> None:
        for v in (*node.inputs, *node.region_reads):
            name = self.resolve(v).name
            self.users[name] = [u for u in self.users.get(name, ()) if u.name != node.name]

    def remark(self, kind: str, message: str, node: Node | None = None, **data) -> None:
        key = (kind, message, node.name if node is not None else "")
        if self.ctx is not None and key not in self.seen_remarks:
            self.seen_remarks.add(key)
            self.ctx.remark(kind, message, node, pattern=self.current_pattern, **data)

    # --- fusion helpers ----------------------------------------------------------------
    def activation(self, node: Node) -> tuple[str, Value, tuple[Node, ...]] | None:
        """``(kind, input, nodes)`` when ``node`` computes an activation, else None.

        The same answer for the IR op (ONNX: ``relu``, ``logistic``, ``clamp`` ...) and for the
        composite JAX makes (``jax.nn.relu``), so one pattern matches both frontends. ``nodes``
        are the nodes that compute it (two for ``x * logistic(x)``), ``node`` last.
        """
        if node.op == "composite" and len(node.inputs) == len(node.outputs) == 1:
            kind = _COMPOSITE_ACTIVATIONS.get(node.attrs.get("name", ""))
            return (kind, node.inputs[0], (node,)) if kind else None
        if len(node.outputs) != 1:
            return None
        if node.op in _OP_ACTIVATIONS:
            return _OP_ACTIVATIONS[node.op], node.inputs[0], (node,)
        if node.op == "max" and any(self.constant_value(v) == 0 for v in node.inputs):
            x = node.inputs[1] if self.constant_value(node.inputs[0]) == 0 else node.inputs[0]
            return ("relu", x, (node,)) if x.type == node.output.type else None
        if node.op == "clamp" and all(self.constant_value(v) is not None
                                      for v in (node.inputs[0], node.inputs[2])):
            return "clip", node.inputs[1], (node,)
        if node.op in ("min", "max"):  # ONNX Clip: min(max(x, lo), hi), bounds constant
            inner = self._bounded(node)
            p = self.producer(inner) if inner is not None else None
            if p is not None and self.num_uses(inner) == 1:
                if node.op == "min" and p.op == "relu":  # relu6 after canonicalize
                    return "clip", p.inputs[0], (p, node)
                if (p.op == ("max" if node.op == "min" else "min")
                        and (x := self._bounded(p)) is not None):
                    return "clip", x, (p, node)
        if node.op == "mul":  # silu written out: x * logistic(x)
            for x, s in (node.inputs, node.inputs[::-1]):
                p = self.producer(s)
                if (p is not None and p.op == "logistic" and self.resolve(p.inputs[0]).name
                        == self.resolve(x).name and self.num_uses(s) == 1):
                    return "silu", x, (p, node)
        if node.op in ("mul", "div"):  # GELU / hard-swish written out (torch.onnx exports)
            from .fuse_activations import written_out
            return written_out(self, node)
        return None

    def _bounded(self, node: Node) -> Value | None:
        """For ``min``/``max`` of a value and a constant bound: the value (same type as the result)."""
        for x, bound in (node.inputs, node.inputs[::-1]):
            # A later node's bound is not in ``producers`` yet: look it up in the graph.
            ahead = self.graph.producers.get(bound.name) if self.producer(bound) is None else None
            const = ahead is not None and ahead.op == "constant"
            if (const or self.constant_value(bound) is not None) and x.type == node.output.type:
                return x
        return None

    def outline(self, nodes: Sequence[Node], name: str, attrs: dict | None = None,
                operands: Sequence[Value] | None = None) -> Node | None:
        """Replace a connected set of nodes by one composite ``name`` whose body is those nodes.

        Exactly one node's outputs may be read outside the set (the root); values flowing in
        become the body's inputs, params stay read by name (``Node.region_reads``). Refuses,
        with a ``missed`` remark, when an intermediate value has users outside the set.

        ``operands`` fixes the composite's inputs and their order (for a lowering rule that
        reads them as arguments): those values, params included, become the body's inputs;
        scalar constants the nodes read are copied into the body; any other value flowing in
        refuses the match with a ``missed`` remark.
        """
        nodes = _topo_order(list({id(n): n for n in nodes}.values()), self)
        inside = {o.name for n in nodes for o in n.outputs}
        reads: dict[str, int] = {}
        for n in nodes:
            for v in (*n.inputs, *n.region_reads):
                reads[self.resolve(v).name] = reads.get(self.resolve(v).name, 0) + 1
        root = nodes[-1]
        for n in nodes[:-1]:
            for o in n.outputs:
                extra = self.num_uses(o) - reads.get(o.name, 0)
                if extra > 0:
                    self.remark("missed", f"did not form {name}: %{o.name} ({n.op}) has {extra} "
                                "user(s) outside the match", root, value=o.name,
                                reason="several-users")
                    return None
        namer = self.namer
        local: dict[str, Value] = {}
        body_inputs: list[Value] = []
        outer_inputs: list[Value] = []
        body_nodes: list[Node] = []
        escaped: list[Value] = []
        for v in operands or ():
            v = self.resolve(v)
            b = Value(namer(), v.type)
            local.setdefault(v.name, b)
            body_inputs.append(b)
            outer_inputs.append(v)

        def inner(v: Value) -> Value:
            v = self.resolve(v)
            if v.name in local:
                return local[v.name]
            if v.name in inside or v.name in self.params:
                return v  # params are read by name from the root graph
            if operands is not None:
                p = self.producer(v)
                if p is not None and p.op == "constant":  # a shared scalar: copy it inside
                    copy = p.replace(outputs=(Value(namer(), v.type),))
                    body_nodes.append(copy)
                    local[v.name] = copy.outputs[0]
                else:
                    escaped.append(v)
                return local.get(v.name, v)
            local[v.name] = Value(namer(), v.type)
            body_inputs.append(local[v.name])
            outer_inputs.append(v)
            return local[v.name]

        for n in nodes:
            ins = tuple(inner(v) for v in n.inputs)
            outs = tuple(Value(namer(), o.type) for o in n.outputs)
            local.update({o.name: m for o, m in zip(n.outputs, outs)})
            body_nodes.append(n.replace(inputs=ins, outputs=outs))
        if escaped:
            self.remark("missed", f"did not form {name}: %{escaped[0].name} flows into the match "
                        "but is not one of its operands", root, reason="unexpected-operand")
            return None
        body = Graph(name, tuple(body_inputs), tuple(local[o.name] for o in root.outputs),
                     tuple(body_nodes))
        out = self.op("composite", *outer_inputs, regions=[body], loc=root.loc, name=name,
                      **(attrs or {}))
        fused = self.new_nodes[-1]
        self.replace(root, out)
        for n in nodes[:-1]:
            self._forget_reads(n)  # dead now: their reads no longer count as uses
        return fused

    def resolve(self, v: Value) -> Value:
        while v.name in self.subst:
            v = self.subst[v.name]
        return self.retyped.get(v.name, v)

    def param_type(self, name: str) -> TensorType | None:
        arr = self.params.get(name)
        return None if arr is None else TensorType.of(arr)


# Activations the fusion patterns know, by IR op and by the composite name JAX gives them.
_OP_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "logistic": "sigmoid", "tanh": "tanh",
                   "silu": "silu", "relu6": "clip", "hard_swish": "hard_swish"}
_COMPOSITE_ACTIVATIONS = {"jax.nn.relu": "relu", "jax.nn.gelu": "gelu", "jax.nn.silu": "silu",
                          "jax.nn.swish": "silu", "jax.nn.sigmoid": "sigmoid",
                          "jax.nn.relu6": "clip", "jax.nn.hard_tanh": "clip", "jax.nn.tanh": "tanh",
                          "jax.nn.hard_swish": "hard_swish", "jax.nn.hard_silu": "hard_swish"}


def _topo_order(nodes: Sequence[Node], rw: Rewriter) -> list[Node]:
    """The nodes ordered so each comes after the ones in the set it reads."""
    by_name = {o.name: n for n in nodes for o in n.outputs}
    order: list[Node] = []
    done: set[int] = set()

    def visit(n: Node) -> None:
        if id(n) in done:
            return
        done.add(id(n))
        for v in (*n.inputs, *n.region_reads):
            p = by_name.get(rw.resolve(v).name)
            if p is not None:
                visit(p)
        order.append(n)

    for n in nodes:
        visit(n)
    roots = [n for n in order if not any(rw.resolve(v).name in {o.name for o in n.outputs}
                                         for m in order for v in m.inputs)]
    if len(roots) != 1:
        raise ValueError(f"outline: the nodes must have one root, found {len(roots)}")
    order.remove(roots[0])
    return order + roots


def _remap(n: Node, rw: Rewriter) -> Node:
    ins = tuple(rw.resolve(v) for v in n.inputs)
    if ins == n.inputs:
        return n
    if not rw.retype_any or all(types_match(a.type, b.type) for a, b in zip(n.inputs, ins)):
        return n.replace(inputs=ins)
    return _retype(n, ins, rw)


def _retype(n: Node, ins: Sequence[Value], rw: Rewriter) -> Node:
    """``n`` re-inferred for inputs whose types changed; its outputs' users follow."""
    try:
        m = retype_node(n, ins, rw.param_type)
    except InferenceError:
        # Some fixes need the whole graph (resizing a constant fill upstream): leave the node
        # for the infer_types that ends the sweep, which fixes it or names it. Its inputs keep
        # the types it was built for, so that inference sees (and reports) what changed.
        return n.replace(inputs=tuple(v if types_match(v.type, o.type) else Value(v.name, o.type)
                                      for v, o in zip(ins, n.inputs)))
    for old, new in zip(n.outputs, m.outputs):
        if new is not old:
            rw.retyped[old.name] = new
    return m


def sweep(graph: Graph, patterns: Sequence[Pattern], ctx: PassContext | None,
          seen_remarks: set | None = None, *, regions: bool = False,
          parent: Rewriter | None = None) -> tuple[Graph, bool]:
    """One pass over the nodes in order, trying each pattern on each node once.

    With ``regions``, the bodies of region-carrying nodes (composites) are rewritten first,
    each to its own fixpoint. ``parent`` is the rewriter of the enclosing graph when ``graph``
    is a region: params and value names belong to the root graph and are shared.
    """
    rw = Rewriter(graph, ctx, seen_remarks)
    if parent is not None:
        rw.params, rw.namer, rw.notes = parent.params, parent.namer, parent.notes
        rw.retype_any = parent.retype_any
    out: list[Node] = []
    for n in graph.nodes:
        n = _remap(n, rw)
        if regions and n.regions:
            new = tuple(_rewrite_region(r, patterns, ctx, rw) for r in n.regions)
            if any(a is not b for a, b in zip(new, n.regions)):
                rw._forget_reads(n)  # the rewritten body may read other params
                n = n.replace(regions=new)
                if rw.retype_any:  # a body's outputs may have changed type
                    n = _retype(n, n.inputs, rw)
                rw._commit([n])
                rw.changed = True
        rw.new_nodes = []
        fired = False
        for p in patterns:
            if p.ops is not None and n.op not in p.ops:
                continue
            rw.current_pattern = p.name
            if p.fn(rw, n):
                fired = True
                rw._commit(rw.new_nodes)
                break
            rw.new_nodes = []  # a pattern that made nodes but did not fire leaves nothing behind
        out.extend(rw.new_nodes)
        if not fired:
            out.append(n)
            rw.producers.update({o.name: n for o in n.outputs})
    outputs = tuple(rw.resolve(v) for v in graph.outputs)
    params = rw.params if parent is None else {}
    result = graph.replace(nodes=tuple(out), outputs=outputs, params=params)
    if parent is None:
        result = result.replace(annotations=_live_notes(rw.notes.values(), result))
    if parent is not None:
        parent.retype_any |= rw.retype_any
    elif rw.retype_any:
        result = infer_types(result)  # settles what the node-by-node retyping could not
    return result, rw.changed


def _rewrite_region(region: Graph, patterns, ctx, parent: Rewriter, max_sweeps: int = 20) -> Graph:
    """A region rewritten to its fixpoint (the same object when nothing fired)."""
    changed_any = False
    for _ in range(max_sweeps):
        region, changed = sweep(region, patterns, ctx, parent.seen_remarks, regions=True,
                                parent=parent)
        changed_any |= changed
        if not changed:
            break
    if not changed_any:
        return region
    return region.replace(nodes=remove_dead(region.replace(params={})).nodes)


def remove_dead(graph: Graph) -> Graph:
    """Drop nodes whose outputs nothing uses, and params nothing references."""
    live = {v.name for v in graph.outputs}
    keep: list[Node] = []
    for n in reversed(graph.nodes):
        if any(o.name in live for o in n.outputs):
            keep.append(n)
            live.update(v.name for v in (*n.inputs, *n.region_reads))
    params = {k: v for k, v in graph.params.items() if k in live}
    out = graph.replace(nodes=tuple(reversed(keep)), params=params)
    return out.replace(annotations=_live_notes(graph.annotations, out)) if graph.annotations else out


def _live_notes(notes, graph: Graph) -> tuple[Annotation, ...]:
    """The annotations whose target still exists in ``graph`` (root-level names)."""
    names = set(graph.params) | {v.name for v in graph.inputs}
    names.update(o.name for n in graph.nodes for o in n.outputs)
    return tuple(a for a in notes if a.target in names)


def apply_patterns(graph: Graph, patterns: Sequence[Pattern], ctx: PassContext | None = None,
                   max_sweeps: int = 20, regions: bool = False) -> Graph:
    """Apply patterns until none fires (or max_sweeps), then drop what became dead.

    ``regions=True`` also rewrites inside composite bodies (and other regions).
    """
    changed_any = False
    seen_remarks: set = set()
    for _ in range(max_sweeps):
        graph, changed = sweep(graph, patterns, ctx, seen_remarks, regions=regions)
        changed_any |= changed
        if not changed:
            break
    return remove_dead(graph) if changed_any else graph
