"""The pass registry: each pass is a named function with typed, documented options."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir.registry import did_you_mean
from ..errors import PassFailure


class PassOptionError(PassFailure, ValueError):
    """An unknown pass or option, or an option value outside what the option allows."""


@dataclass(frozen=True)
class Option:
    """One option of a pass: type, default, allowed range or choices, meaning."""

    name: str
    type: type  # int | float | bool | str, or list (of ``item``); a list option's value is a tuple
    default: object
    doc: str = ""
    range: tuple[float | None, float | None] | None = None  # inclusive bounds
    choices: tuple[str, ...] | None = None
    check: Callable[[object], None] | None = None  # raises PassOptionError for a bad value
    item: type = str  # element type of a list option; range and choices apply per element

    def parse(self, raw, pass_name: str):
        """Convert and check a value given as text or Python; errors name pass and option."""
        if self.type is list:
            items = [raw] if isinstance(raw, (str, int, float, bool)) else raw
            try:
                items = list(items)
            except TypeError:
                raise PassOptionError(f"pass '{pass_name}' option '{self.name}': expected a list "
                                      f"of {self.item.__name__}, got {raw!r}") from None
            v = tuple(self._scalar(x, self.item, pass_name) for x in items)
        else:
            v = self._scalar(raw, self.type, pass_name)
        if self.check is not None:
            self.check(v)
        return v

    def _scalar(self, raw, typ: type, pass_name: str):
        where = f"pass '{pass_name}' option '{self.name}'"
        v = raw
        try:
            if typ is bool:
                if isinstance(raw, str):
                    if raw.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    v = raw.lower() in ("true", "1")
                else:
                    v = bool(raw)
            elif typ in (int, float) and isinstance(raw, str):
                v = typ(raw)
            elif typ is int and isinstance(raw, float) and raw.is_integer():
                v = int(raw)
            elif typ is float and isinstance(raw, int):
                v = float(raw)
            elif typ is str:
                v = str(raw)
        except ValueError:
            raise PassOptionError(f"{where}: {raw!r} is not a valid {typ.__name__}") from None
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise PassOptionError(f"{where}: expected {typ.__name__}, got {raw!r}")
        if self.range is not None:
            lo, hi = self.range
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise PassOptionError(f"{where}: {v} is outside the allowed range "
                                      f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")
        if self.choices is not None and v not in self.choices:
            raise PassOptionError(f"{where}: {v!r} is not one of {', '.join(self.choices)}"
                                  f"{did_you_mean(str(v), self.choices)}")
        return v

    def describe(self) -> str:
        if self.choices:
            allowed = f" one of {'|'.join(self.choices)}"
        elif self.range:
            lo, hi = self.range
            allowed = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
                       f" >= {lo}" if lo is not None else f" <= {hi}")
        else:
            allowed = ""
        kind = f"list[{self.item.__name__}]" if self.type is list else self.type.__name__
        default = list(self.default) if self.type is list else self.default
        return f"{self.name}: {kind} = {default!r}{allowed}  {self.doc}".rstrip()


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: ``fn(graph, ctx, **options) -> graph``."""

    name: str
    fn: Callable
    options: tuple[Option, ...]
    doc: str
    needs: tuple[str, ...] = ()  # context data the pass requires, e.g. ("calibration",)

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise PassOptionError(f"pass '{self.name}' has no option '{name}'"
                              f"{did_you_mean(name, [o.name for o in self.options])}; "
                              f"options: {', '.join(o.name for o in self.options) or 'none'}")

    def resolve(self, given: dict) -> dict:
        """All options with defaults filled and given values checked."""
        values = {o.name: o.default for o in self.options}
        for k, raw in given.items():
            values[k] = self.option(k).parse(raw, self.name)
        return values


PASSES: dict[str, PassInfo] = {}
PIPELINES: dict[str, str] = {}


def register_pass(name: str, *, options: Sequence[Option] = (), needs: Sequence[str] = ()):
    """Register ``fn(graph, ctx, **options) -> Graph`` under ``name``; its docstring is its purpose."""
    def deco(fn):
        if name in PASSES:
            raise ValueError(f"pass {name!r} is already registered")
        for o in options:
            if o.type is list and not isinstance(o.default, tuple):
                raise TypeError(f"pass {name!r} option {o.name!r}: a list option's default is a tuple")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        PASSES[name] = PassInfo(name, fn, tuple(options), doc, tuple(needs))
        return fn
    return deco


def register_pipeline(name: str, pipeline: str) -> None:
    """A named pipeline (such as ``default``) that expands to a pipeline string."""
    PIPELINES[name] = pipeline


def get_pass(name: str) -> PassInfo:
    if name not in PASSES:
        raise PassOptionError(f"unknown pass '{name}'{did_you_mean(name, list(PASSES) + list(PIPELINES))}; "
                              f"run `tensorsmith passes` for the list")
    return PASSES[name]
