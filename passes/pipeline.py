"""Pipeline text: ``canonicalize,prune{sparsity=0.5,pattern=2:4,skip=[fc,conv1]},dce`` <-> steps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .registry import PIPELINES, PassOptionError, get_pass


@dataclass(frozen=True)
class Step:
    """One pass of a pipeline with its resolved options."""

    name: str
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        info = get_pass(self.name)
        changed = {k: v for k, v in self.options.items() if info.option(k).default != v}
        if not changed:
            return self.name
        return self.name + "{" + ",".join(f"{k}={_fmt(v)}" for k, v in changed.items()) + "}"


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


_CLOSE = {"{": "}", "[": "]"}


def _split_top(text: str) -> list[str]:
    """Split at the commas outside ``{...}`` and ``[...]``."""
    parts, stack, cur = [], [], []
    for ch in text:
        if ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                raise PassOptionError(f"pipeline {text!r}: unbalanced '{ch}'")
        if ch == "," and not stack:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if stack:
        raise PassOptionError(f"pipeline {text!r}: '{stack[-1]}' is missing")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_one(item: str) -> list[Step]:
    if "{" in item:
        name, rest = item.split("{", 1)
        if not rest.endswith("}"):
            raise PassOptionError(f"pipeline step {item!r}: options must end with '}}'")
        body = rest[:-1]
        given = {}
        for kv in _split_top(body):
            if "=" not in kv:
                raise PassOptionError(f"pipeline step {item!r}: option {kv!r} needs name=value")
            k, v = kv.split("=", 1)
            v = v.strip()
            if v.startswith("[") and v.endswith("]"):  # a list option: name=[a,b]
                v = _split_top(v[1:-1])
            given[k.strip()] = v
    else:
        name, given = item, {}
    name = name.strip()
    if name in PIPELINES:
        if given:
            raise PassOptionError(f"pipeline '{name}' takes no options")
        return parse_pipeline(PIPELINES[name])
    info = get_pass(name)
    return [Step(name, info.resolve(given))]


def parse_pipeline(spec) -> list[Step]:
    """Steps from a string, or a list of strings / (name, options) pairs / Steps; all checked."""
    if spec is None:
        return []
    if isinstance(spec, str):
        items: Sequence = _split_top(spec)
    else:
        items = list(spec)
    steps: list[Step] = []
    for it in items:
        if isinstance(it, Step):
            steps.append(Step(it.name, get_pass(it.name).resolve(it.options)))
        elif isinstance(it, tuple) and len(it) == 2:
            steps.append(Step(it[0], get_pass(it[0]).resolve(dict(it[1]))))
        elif isinstance(it, str):
            steps.extend(_parse_one(it.strip()))
        else:
            raise PassOptionError(f"pipeline entry {it!r} is not a pass name, (name, options) or Step")
    return steps


def format_pipeline(steps: Sequence[Step]) -> str:
    return ",".join(str(s) for s in steps)
