"""The op registry: what each op is (attributes, type rule, cost), declared once."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

from .graph import Attrs
from .types import TensorType

REQUIRED = object()  # marker: attribute has no default


class OpTypeError(ValueError):
    """An op's type rule rejected its inputs or attributes."""


@dataclass(frozen=True)
class Cost:
    """Work of one node: floating/integer operations and bytes moved (inputs + outputs)."""

    flops: int = 0
    bytes: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an op: its name, kind, default and meaning."""

    name: str
    kind: str  # int | float | bool | str | dtype | ints | floats | any
    default: object = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


TypeRule = Callable[[Sequence[TensorType], Attrs], Sequence[TensorType]]
FlopRule = Callable[[Sequence[TensorType], Sequence[TensorType], Attrs, dict], int]


@dataclass(frozen=True)
class OpDef:
    """The declaration of one op."""

    name: str
    type_rule: TypeRule
    attrs: tuple[AttrSpec, ...] = ()
    arity: tuple[int, int | None] = (1, 1)  # min, max inputs (None: any number)
    flops_rule: FlopRule | None = None
    traits: frozenset[str] = frozenset()  # elementwise, commutative, shape, region, ...
    doc: str = ""

    def attr_spec(self, name: str) -> AttrSpec | None:
        return next((a for a in self.attrs if a.name == name), None)

    def with_defaults(self, attrs: Attrs) -> Attrs:
        """Attributes completed with the defaults of those not given."""
        missing = {a.name: a.default for a in self.attrs
                   if a.name not in attrs and not a.required and a.default is not None}
        return attrs.set(**missing) if missing else attrs

    def check_attrs(self, attrs: Attrs) -> None:
        """Raise OpTypeError for unknown or missing attributes."""
        known = {a.name for a in self.attrs}
        if "any" not in self.traits:
            for k in attrs:
                if k not in known:
                    raise OpTypeError(f"unknown attribute {k!r} for op {self.name!r}"
                                      f"{did_you_mean(k, known)}")
        for a in self.attrs:
            if a.required and a.name not in attrs:
                raise OpTypeError(f"op {self.name!r} requires attribute {a.name!r}")

    def infer(self, types: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
        """Output types for these input types, raising OpTypeError naming the rule broken."""
        lo, hi = self.arity
        if len(types) < lo or (hi is not None and len(types) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise OpTypeError(f"op {self.name!r} takes {want} inputs, got {len(types)}")
        self.check_attrs(attrs)
        return tuple(self.type_rule(list(types), attrs))

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
             symbols: dict | None = None) -> Cost:
        """FLOPs and bytes of one execution (symbolic dims taken as ``symbols`` or 1)."""
        moved = sum(t.nbytes(symbols) for t in ins) + sum(t.nbytes(symbols) for t in outs)
        if self.flops_rule is not None:
            return Cost(int(self.flops_rule(ins, outs, attrs, symbols or {})), moved)
        if "elementwise" in self.traits:
            return Cost(sum(t.numel(symbols) for t in outs), moved)
        return Cost(0, moved)


OPS: dict[str, OpDef] = {}


def define_op(name: str, type_rule: TypeRule, *, attrs: Sequence[AttrSpec] = (),
              arity: tuple[int, int | None] | int = 1, flops: FlopRule | None = None,
              traits: Sequence[str] = (), doc: str = "") -> OpDef:
    """Register an op; each op is declared exactly once."""
    if name in OPS:
        raise ValueError(f"op {name!r} is already registered")
    if isinstance(arity, int):
        arity = (arity, arity)
    od = OpDef(name, type_rule, tuple(attrs), arity, flops, frozenset(traits), doc)
    OPS[name] = od
    return od


def did_you_mean(name: str, choices) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def get_op(name: str) -> OpDef:
    """The declaration of op ``name``; the error names the closest registered op."""
    try:
        return OPS[name]
    except KeyError:
        raise OpTypeError(f"unknown op {name!r}{did_you_mean(name, OPS)}") from None
