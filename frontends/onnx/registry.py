"""The ONNX converter table: one entry per (domain, op type, since-version)."""
from __future__ import annotations

import bisect
from typing import Callable

Converter = Callable  # fn(ctx: NodeContext, *inputs: Value | None) -> Value | Sequence[Value | None]

# (domain, op_type) -> sorted list of (since, converter)
CONVERTERS: dict[tuple[str, str], list[tuple[int, Converter]]] = {}


def norm_domain(domain: str) -> str:
    """'' and 'ai.onnx' name the same (default) domain."""
    return "" if domain in ("", "ai.onnx") else domain


def onnx_op(*op_types: str, since: int = 1, domain: str = ""):
    """Register ``fn(ctx, *inputs)`` converting ``op_types`` from opset ``since`` on.

    Several versions of one op are several registrations with different ``since``; a node
    gets the one with the newest ``since`` <= its opset.
    """
    def deco(fn):
        for op_type in op_types:
            versions = CONVERTERS.setdefault((norm_domain(domain), op_type), [])
            if any(s == since for s, _ in versions):
                raise ValueError(f"ONNX op {op_type!r} (domain {domain!r}) already has a "
                                 f"converter since opset {since}")
            bisect.insort(versions, (since, fn), key=lambda e: e[0])
        return fn
    return deco


def lookup(op_type: str, domain: str, opset: int) -> tuple[int, Converter] | None:
    """(since, converter) for a node of ``op_type`` at ``opset``, or None."""
    versions = CONVERTERS.get((norm_domain(domain), op_type))
    if not versions:
        return None
    best = None
    for since, fn in versions:
        if since <= opset:
            best = (since, fn)
    return best


def domains() -> set[str]:
    """Domains that have at least one converter."""
    return {d for d, _ in CONVERTERS}
