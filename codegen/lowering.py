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

    @property
    def symbolic(self) -> bool:
        """Whether dims are jax symbolic dims (lowering for export), not ints."""
        return any(not isinstance(v, int) for v in self.symbols.values())

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
    out = rule(ctx, node, *args)
    if ctx.symbolic:
        out = _conform(ctx, node, out)
    return out


def _conform(ctx: LoweringContext, node: Node, out):
    """Under symbolic export, give each output the IR's canonical dims where jax's own
    expression for them differs (``floordiv(floordiv(H-1,2),2)+1`` vs ``(H+3)//4``): jax
    cannot prove such dims equal, and would refuse to add the two values."""
    import jax.numpy as jnp
    single = not isinstance(out, (tuple, list))
    outs = [out] if single else list(out)
    for i, (v, o) in enumerate(zip(node.outputs, outs)):
        if v.type.is_static or not hasattr(o, "shape"):
            continue
        want = ctx.shape(v.type.shape)
        if tuple(o.shape) != want:
            outs[i] = jnp.reshape(o, want)
    return outs[0] if single else type(out)(outs)
