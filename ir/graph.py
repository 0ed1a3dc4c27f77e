"""Values, nodes and graphs: the IR's data model."""
from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable, Iterator

import numpy as np

from .annotations import Annotation, merge_annotations
from .types import DimExpr, TensorType

AttrValue = Any  # int | float | bool | str | None | tuple[AttrValue, ...]


def freeze_attr(value, key: str = "?") -> AttrValue:
    """Normalise an attribute value to plain immutable Python (lists become tuples)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, DimExpr):  # attributes stay plain: a symbolic dim is held as its text
        return str(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v, key) for v in value)
    if isinstance(value, np.ndarray) and value.ndim <= 1 and value.size <= 64:
        return tuple(freeze_attr(v, key) for v in value.tolist()) if value.ndim else freeze_attr(value.item(), key)
    raise TypeError(f"attribute {key!r}: {type(value).__name__} is not a plain value "
                    "(int, float, bool, str, None or tuples of them)")


class Attrs(Mapping):
    """An immutable, hashable, sorted mapping of attribute name to plain value."""

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Mapping | Iterable = ()):
        d = dict(items)
        self._items = tuple(sorted((k, freeze_attr(v, k)) for k, v in d.items()))
        self._dict = dict(self._items)

    def __getitem__(self, key):
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple((k, _hashable(v)) for k, v in self._items))

    def __eq__(self, other) -> bool:
        if isinstance(other, Attrs):
            return _attr_key(self._items) == _attr_key(other._items)
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"Attrs({self._dict!r})"

    def set(self, **changes) -> "Attrs":
        """A copy with some attributes replaced (None values remove the key)."""
        d = dict(self._dict)
        for k, v in changes.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        return Attrs(d)


def _hashable(v):
    # NaN != NaN would make equal attrs unequal; hash/compare by repr for floats.
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, tuple):
        return tuple(_hashable(x) for x in v)
    return v


def _attr_key(items):
    return tuple((k, _hashable(v), type(v).__name__) for k, v in items)


@dataclass(frozen=True)
class Value:
    """An SSA value (or a reference to a param): a name and a tensor type."""

    name: str
    type: TensorType

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.name!r}: {self.type})"


@dataclass(frozen=True, eq=False)
class Node:
    """One operation: ``outputs = op(inputs) {attrs}`` with optional regions (sub-graphs)."""

    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Attrs = field(default_factory=Attrs)
    regions: tuple["Graph", ...] = ()
    loc: str = ""  # where it came from: "model.py:12 (fn)", an ONNX node name

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "regions", tuple(self.regions))
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))

    @cached_property
    def region_reads(self) -> tuple[Value, ...]:
        """Values its regions read from outside themselves (root params), once per read."""
        if not self.regions:
            return ()
        reads: list[Value] = []
        for r in self.regions:
            inner = {v.name for v in r.inputs}
            for n in r.nodes:
                reads.extend(v for v in (*n.inputs, *n.region_reads) if v.name not in inner)
                inner.update(o.name for o in n.outputs)
            reads.extend(v for v in r.outputs if v.name not in inner)
        return tuple(reads)

    @property
    def output(self) -> Value:
        """The single output (raises if the node has several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    @property
    def name(self) -> str:
        """The node's printed name: its first output's name."""
        return self.outputs[0].name if self.outputs else self.op

    @property
    def body(self) -> "Graph":
        """The first region (a composite's body)."""
        return self.regions[0]

    def replace(self, **changes) -> "Node":
        return replace(self, **changes)

    def __repr__(self) -> str:
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        return f"<Node {outs} = {self.op}({ins})>"


def _freeze_param(name: str, array) -> np.ndarray:
    if getattr(array, "abstract", False):  # a declared-but-unloaded param (see parser)
        return array
    arr = np.asarray(array)
    if arr.dtype == object:
        raise TypeError(f"param {name!r}: object arrays are not tensors")
    if _mutable_from_outside(arr):
        # Own a read-only copy: the caller's array must never change through us, and
        # passes must not edit weights in place.
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def _mutable_from_outside(arr: np.ndarray) -> bool:
    """Whether someone could still write ``arr``'s memory (it, or a base it views, is writable).

    A read-only view of a writable array would change under us when the owner writes it,
    so only arrays whose whole base chain is read-only are shared without a copy.
    """
    a = arr
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return True
        a = a.base
    if a is None:
        return False
    try:
        return not memoryview(a).readonly
    except TypeError:  # a buffer owner we cannot inspect: copy to be safe
        return True


@dataclass(frozen=True)
class Requirement:
    """A condition ``expr >= 0`` the model places on its symbols, and the node that placed it."""

    expr: Any           # a Dim (int or DimExpr) in normal form; the model needs it >= 0
    origin: str = ""    # the node (ONNX name, IR loc) that placed it
    reason: str = ""    # why, in words

    def __post_init__(self):
        from .dims import DimExpr, _as_int
        from .dimtext import parse_dim
        e = self.expr
        object.__setattr__(self, "expr", parse_dim(e) if isinstance(e, str)
                           else e if isinstance(e, DimExpr) else _as_int(e))

    @property
    def symbols(self) -> frozenset:
        from .dims import dim_symbols
        return frozenset(dim_symbols(self.expr))

    def holds(self, env: Mapping[str, int]) -> bool | None:
        """Whether it holds for these symbol sizes (None when a symbol is unbound)."""
        from .dims import eval_dim
        v = eval_dim(self.expr, dict(env))
        return v >= 0 if isinstance(v, int) else None

    def condition(self) -> str:
        """Readable text: ``sequence <= 512``, ``L >= 33``, ``H >= W`` (parse_requirement inverts)."""
        from .dims import DimExpr
        e = self.expr
        if not isinstance(e, DimExpr):
            return f"{e} >= 0"
        pos = {m: c for m, c in e.terms if c > 0 and m}
        neg = {m: -c for m, c in e.terms if c < 0 and m}
        const = dict(e.terms).get((), 0)
        if pos:  # symbolic terms with a plus sign on the left: lhs >= rhs
            lhs, rhs = pos, dict(neg)
            if const:
                rhs[()] = -const
            op = ">="
        else:    # only minus signs: -(neg) + const >= 0  <=>  neg <= const
            lhs, rhs = neg, ({(): const} if const else {})
            op = "<="
        return f"{_side(lhs)} {op} {_side(rhs)}"

    def __str__(self) -> str:
        return self.condition()


def _side(terms: dict) -> str:
    from .dims import _make
    return str(_make(terms))


def parse_requirement(text: str) -> Any:
    """The ``expr >= 0`` of a condition ``a >= b`` / ``a <= b`` (the printer's form)."""
    from .dims import DimError
    from .dimtext import parse_dim
    for op in (">=", "<="):
        if op in text:
            lhs, _, rhs = text.partition(op)
            a, b = parse_dim(lhs.strip()), parse_dim(rhs.strip())
            return a - b if op == ">=" else b - a
    raise DimError(f"a requirement is written 'a >= b' or 'a <= b', got {text!r}")


@dataclass(frozen=True, eq=False)
class Graph:
    """A topologically ordered list of nodes with inputs, outputs and a params table."""

    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    requires: tuple[Requirement, ...] = ()  # conditions on its symbols (see Requirement)
    annotations: tuple = ()  # facts per param/value: masks, quant params (ir/annotations.py)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "requires", merge_requirements(self.requires))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "annotations", merge_annotations(self.annotations))
        frozen = {k: _freeze_param(k, v) for k, v in self.params.items()}
        object.__setattr__(self, "params", types.MappingProxyType(frozen))

    # --- queries ---------------------------------------------------------------------
    def is_param(self, v: Value | str) -> bool:
        """True if the value names an entry of ``params``."""
        return (v if isinstance(v, str) else v.name) in self.params

    def param(self, name: str) -> Value:
        """The value that refers to param ``name``."""
        arr = self.params[name]
        return Value(name, TensorType.of(arr))

    @cached_property
    def producers(self) -> Mapping[str, Node]:
        """Value name -> the node that defines it (read-only)."""
        return types.MappingProxyType({o.name: n for n in self.nodes for o in n.outputs})

    @cached_property
    def users(self) -> Mapping[str, tuple[Node, ...]]:
        """Value name -> the nodes that read it (in order; a node appears once per use).

        A node whose region (a composite body) reads a param counts as that param's user.
        """
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in (*n.inputs, *n.region_reads):
                out.setdefault(v.name, []).append(n)
        return types.MappingProxyType({k: tuple(v) for k, v in out.items()})

    def num_uses(self, v: Value) -> int:
        """Reads of ``v`` by nodes plus its appearances among graph outputs."""
        return len(self.users.get(v.name, ())) + sum(o.name == v.name for o in self.outputs)

    def producer(self, v: Value) -> Node | None:
        return self.producers.get(v.name)

    def annotation(self, target: "Value | str", kind: str) -> "Annotation | None":
        """The ``kind`` annotation on a param or value (None when it has none)."""
        name = target if isinstance(target, str) else target.name
        for a in self.annotations:
            if a.target == name and a.kind == kind:
                return a
        return None

    def annotations_of(self, kind: str) -> tuple["Annotation", ...]:
        """Every annotation of one kind (``"mask"``, ``"quant"``...), in table order."""
        return tuple(a for a in self.annotations if a.kind == kind)

    def walk(self) -> Iterator[Node]:
        """All nodes, including those inside regions, depth-first in order."""
        for n in self.nodes:
            yield n
            for r in n.regions:
                yield from r.walk()

    @cached_property
    def value_names(self) -> set[str]:
        names = {v.name for v in self.inputs} | set(self.params)
        for n in self.walk():
            names.update(o.name for o in n.outputs)
        for n in self.nodes:
            for r in n.regions:
                names.update(v.name for v in r.inputs)
        return names

    def namer(self, prefix: str = "") -> "Namer":
        """A generator of fresh value names that do not clash with this graph's names."""
        return Namer(self.value_names, prefix)

    # --- construction ----------------------------------------------------------------
    def replace(self, **changes) -> "Graph":
        """A new graph with some fields replaced (nodes, params, ...); arrays are shared."""
        return replace(self, **changes)

    def with_params(self, updates: Mapping[str, np.ndarray], drop: Iterable[str] = ()) -> "Graph":
        """A new graph whose params table has entries added/replaced/dropped."""
        params = dict(self.params)
        for k in drop:
            params.pop(k, None)
        params.update(updates)
        dropped = set(drop) - set(updates)
        kept = tuple(a for a in self.annotations if a.target not in dropped)
        return replace(self, params=params, annotations=kept)

    def with_annotations(self, add: Iterable["Annotation"] = (),
                         drop: Iterable[tuple[str, str]] = ()) -> "Graph":
        """A new graph whose annotation table has entries added/replaced and dropped.

        ``drop`` lists ``(target, kind)`` pairs; a kind of ``"*"`` drops all of a target's.
        """
        drop = set(drop)
        kept = [a for a in self.annotations
                if a.key not in drop and (a.target, "*") not in drop]
        return replace(self, annotations=(*kept, *add))

    def to_text(self) -> str:
        """The IR text form (see ``ir.parse`` for the way back)."""
        from .printer import print_graph
        return print_graph(self)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.params)} params>")


def merge_requirements(*groups: Iterable[Requirement]) -> tuple[Requirement, ...]:
    """Requirements in order, each expression once (the first origin wins)."""
    out: dict = {}
    for g in groups:
        for r in g:
            if not isinstance(r, Requirement):
                raise TypeError(f"requires: expected Requirement, got {type(r).__name__}")
            if isinstance(r.expr, int):
                continue  # a constant condition is decided at once, not kept
            out.setdefault(r.expr, r)
    return tuple(out.values())


_NUMERIC = re.compile(r"^(.*?)(\d+)$")


class Namer:
    """Hands out value names unused so far: ``%12``, ``%13`` ... or ``prefix0`` ..."""

    def __init__(self, taken: Iterable[str], prefix: str = ""):
        self.taken = set(taken)
        self.prefix = prefix
        nums = [int(m.group(2)) for t in self.taken
                if (m := _NUMERIC.match(t)) and m.group(1) == prefix]
        self.next = max(nums, default=-1) + 1

    def __call__(self, hint: str | None = None) -> str:
        if hint and hint not in self.taken:
            self.taken.add(hint)
            return hint
        while f"{self.prefix}{self.next}" in self.taken:
            self.next += 1
        name = f"{self.prefix}{self.next}"
        self.next += 1
        self.taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        self.taken.add(name)
