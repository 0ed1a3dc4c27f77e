"""Annotations: facts about a param or value that passes attach and later passes keep.

One table serves every transformation that must remember something per tensor: pruning masks
(``kind="mask"``: which entries must stay zero), quantization parameters (``kind="quant"``),
shardings. An annotation names its target (a param or value of the graph), a kind, small
printable attributes and, optionally, an array payload (a mask, per-channel scales).

In IR text an annotation is one line after the ``requires`` lines::

    annotate @conv1.weight mask {pattern="2:4", sparsity=0.5}: bool[16,3,3,3]  # 50.0% zero

The payload is saved with the weights (``ir.save``) and checked against the printed type when
it is read back. The rewrite driver carries annotations when a pattern replaces a value, and
drops those whose target is gone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .types import TensorType


@dataclass(frozen=True, eq=False)
class Annotation:
    """``kind`` facts about ``target`` (a param or value name): attrs and an optional array."""

    target: str
    kind: str
    attrs: Any = field(default_factory=dict)  # frozen to ir.Attrs in __post_init__
    array: np.ndarray | None = None

    def __post_init__(self):
        from .graph import Attrs, _freeze_param
        if not isinstance(self.target, str) or not self.target:
            raise TypeError(f"annotation target must be a non-empty name, got {self.target!r}")
        if not isinstance(self.kind, str) or not self.kind.isidentifier():
            raise TypeError(f"annotation kind must be an identifier, got {self.kind!r}")
        attrs = self.attrs if isinstance(self.attrs, Attrs) else Attrs(dict(self.attrs))
        object.__setattr__(self, "attrs", attrs)
        if self.array is not None:
            object.__setattr__(self, "array", _freeze_param(f"{self.kind}:{self.target}",
                                                            self.array))

    @property
    def key(self) -> tuple[str, str]:
        return (self.target, self.kind)

    @property
    def type(self) -> TensorType | None:
        """The payload's IR type (None without a payload)."""
        return None if self.array is None else TensorType.of(self.array)

    def retarget(self, target: str) -> "Annotation":
        """The same facts about another name (a renamed param, a replacing value)."""
        return Annotation(target, self.kind, self.attrs, self.array)

    def __repr__(self) -> str:
        payload = f", {self.type}" if self.array is not None else ""
        return f"Annotation({self.target!r}, {self.kind!r}, {dict(self.attrs)!r}{payload})"


def merge_annotations(*groups: Iterable[Annotation]) -> tuple[Annotation, ...]:
    """Annotations in order, one per (target, kind): a later one replaces an earlier one."""
    out: dict[tuple[str, str], Annotation] = {}
    for g in groups:
        for a in g:
            if not isinstance(a, Annotation):
                raise TypeError(f"annotations: expected Annotation, got {type(a).__name__}")
            out.pop(a.key, None)
            out[a.key] = a
    return tuple(out.values())


def keep_live(annotations: Iterable[Annotation], names: Iterable[str]) -> tuple[Annotation, ...]:
    """The annotations whose target is among ``names`` (the rest lost their tensor)."""
    names = set(names)
    return tuple(a for a in annotations if a.target in names)


def annotation_arrays(annotations: Iterable[Annotation]) -> list[np.ndarray]:
    """The payloads, in the order the IR text declares them (how ir.save writes them)."""
    return [a.array for a in annotations if a.array is not None]


def mask_of(annotations: Iterable[Annotation], target: str) -> np.ndarray | None:
    """The mask payload on ``target`` (True where the weight is kept), or None."""
    for a in annotations:
        if a.target == target and a.kind == "mask":
            return a.array
    return None
