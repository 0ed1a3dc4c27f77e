"""The op registry: what each op is (attributes, type rule, cost), declared once."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

from .graph import Attrs
from .types import TensorType
from ..errors import VerifyError

REQUIRED = object()  # marker: attribute has no default


class OpTypeError(VerifyError, ValueError):
    """An op's type rule rejected its inputs or attributes."""


class OpAttrError(OpTypeError):
    """A node's attributes do not fit its op's schema (unknown, missing or wrong kind)."""


class UnknownOpError(OpTypeError):
    """A node names an op that is not registered."""


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
        """Raise OpAttrError for unknown, missing or wrongly-kinded attributes."""
        known = {a.name for a in self.attrs}
        if "any" not in self.traits:
            for k in attrs:
                if k not in known:
                    raise OpAttrError(f"unknown attribute {k!r} for op {self.name!r}"
                                      f"{did_you_mean(k, known)}")
        for a in self.attrs:
            if a.required and a.name not in attrs:
                raise OpAttrError(f"op {self.name!r} requires attribute {a.name!r}")
            if a.name in attrs and attrs[a.name] is not None and not _kind_ok(a.kind, attrs[a.name]):
                raise OpAttrError(f"attribute {a.name!r} of op {self.name!r} must be "
                                  f"{_KIND_TEXT.get(a.kind, a.kind)}, got {attrs[a.name]!r}")

    def infer(self, types: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
        """Output types for these input types, raising OpTypeError naming the rule broken."""
        lo, hi = self.arity
        if len(types) < lo or (hi is not None and len(types) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise OpTypeError(f"op {self.name!r} takes {want} inputs, got {len(types)}")
        self.check_attrs(attrs)
        try:
            # Rules see declared defaults, so a node may omit any attribute that has one.
            return tuple(self.type_rule(list(types), self.with_defaults(attrs)))
        except OpTypeError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
            # A rule tripping over odd input (an attr of the right kind but wrong structure)
            # must still surface as a type error naming the op, not a bare Python crash.
            raise OpTypeError(f"op {self.name!r} rejects inputs "
                              f"({', '.join(str(t) for t in types)}) with attributes "
                              f"{dict(attrs)}: {type(e).__name__}: {e}") from None

    def cost(self, ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Attrs,
             symbols: dict | None = None) -> Cost:
        """FLOPs and bytes of one execution (symbolic dims taken as ``symbols`` or 1)."""
        moved = sum(t.nbytes(symbols) for t in ins) + sum(t.nbytes(symbols) for t in outs)
        if self.flops_rule is not None:
            return Cost(int(self.flops_rule(ins, outs, attrs, symbols or {})), moved)
        if "elementwise" in self.traits:
            return Cost(sum(t.numel(symbols) for t in outs), moved)
        return Cost(0, moved)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_dim(v) -> bool:  # shapes may hold symbolic dims such as "N"
    return _is_int(v) or isinstance(v, str)


def _kind_ok(kind: str, v) -> bool:
    """Whether attribute value ``v`` has the declared ``kind`` (unknown kinds accept anything)."""
    from .types import DTYPES
    checks = {
        "int": _is_int,
        "dim": _is_dim,
        "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
        "bool": lambda x: isinstance(x, bool),
        "str": lambda x: isinstance(x, str),
        "dtype": lambda x: isinstance(x, str) and x in DTYPES,
        "ints": lambda x: _is_int(x) or (isinstance(x, tuple) and all(_is_dim(i) for i in x)),
        "floats": lambda x: isinstance(x, tuple) and all(
            isinstance(i, (int, float)) and not isinstance(i, bool) for i in x),
    }
    check = checks.get(kind)
    return check is None or check(v)


_KIND_TEXT = {"int": "an int", "dim": "a dimension (an int or text such as 2*N)", "float": "a number", "bool": "true or false", "str": "a string",
              "dtype": "an element type name (f32, i8, ...)", "ints": "a tuple of ints",
              "floats": "a tuple of numbers"}

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
        raise UnknownOpError(f"unknown op {name!r}{did_you_mean(name, OPS)}") from None
