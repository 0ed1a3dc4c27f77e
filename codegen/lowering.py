"""The lowering table: one rule per op turning a node into JAX operations."""
from __future__ import annotations

from typing import Callable

from ..ir import Graph, Node
from ..ir.types import eval_dim
from ..errors import LoweringFailure

LOWERINGS: dict[str, Callable] = {}


def lowering(*ops: str):
    """Register ``fn(ctx, node, *inputs) -> array | tuple`` as the lowering of ``ops``."""
    def deco(fn):
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"op {op!r} already has a lowering")
            LOWERINGS[op] = fn
        return fn
    return deco


class LoweringContext:
    """What a lowering rule may use besides its inputs: bound symbols and region execution."""

    def __init__(self, symbols: dict, params: dict):
        self.symbols = symbols  # dimension symbol -> int (or jax symbolic dim under export)
        self.params = params    # param name -> array

    def dim(self, d):
        """A static or symbolic dimension as a number JAX accepts."""
        return d if isinstance(d, int) else eval_dim(d, self.symbols)

    def shape(self, dims) -> tuple:
        return tuple(self.dim(d) for d in dims)

    def run_region(self, region: Graph, args) -> list:
        """Execute a region (a composite's body) on the given arguments."""
        from .interpreter import run_body
        return run_body(region, list(args), self)


class LoweringError(LoweringFailure, NotImplementedError):
    """An op has no lowering, or the lowering rejected a node."""


def lower_node(ctx: LoweringContext, node: Node, args: list):
    rule = LOWERINGS.get(node.op)
    if rule is None:
        raise LoweringError(f"op {node.op!r} has no JAX lowering (node %{node.name})")
    return rule(ctx, node, *args)
