"""Turn a graph into a JAX function by walking its nodes once (under jax.jit)."""
from __future__ import annotations

from typing import Callable, Sequence

from ..ir import Graph
from ..ir.dims import DimExpr
from .lowering import LoweringContext, LoweringError, lower_node


def bind_symbols(graph: Graph, args: Sequence) -> dict:
    """Dimension symbols of the graph's inputs bound to the arguments' sizes."""
    symbols: dict = {}
    for v, a in zip(graph.inputs, args):
        shape = getattr(a, "shape", ())
        if len(shape) != v.type.rank:
            raise ValueError(f"input %{v.name} expects rank {v.type.rank} ({v.type}), "
                             f"got shape {tuple(shape)}")
        for d, actual in zip(v.type.shape, shape):
            if isinstance(d, DimExpr) and d.is_symbol:
                d = str(d)
                if symbols.setdefault(d, actual) is not actual and symbols[d] != actual:
                    raise ValueError(f"input %{v.name} ({v.type}) binds {d}={actual}, but an "
                                     f"earlier input bound {d}={symbols[d]}")
            elif isinstance(d, int) and isinstance(actual, int) and d != actual:
                hint = (" (this model was compiled for a fixed batch size: compile with "
                        "batch_dim=True to accept any)" if d == v.type.shape[0] else "")
                raise ValueError(f"input %{v.name} expects {v.type}, got shape {tuple(shape)}{hint}")
    return symbols


def run_body(g: Graph, args: list, ctx: LoweringContext) -> list:
    """Evaluate the nodes of ``g`` on ``args`` (params come from ``ctx``)."""
    env = dict(ctx.params)
    for v, a in zip(g.inputs, args):
        env[v.name] = a
    for n in g.nodes:
        try:
            out = lower_node(ctx, n, [env[v.name] for v in n.inputs])
        except LoweringError:
            raise
        except Exception as e:  # name the node: XLA's own messages do not
            where = f" [{n.loc}]" if n.loc else ""
            raise LoweringError(f"lowering node %{n.name} = {n.op}(...){where} failed: "
                                f"{type(e).__name__}: {e}") from e
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for v, o in zip(n.outputs, outs):
            env[v.name] = o
    return [env[v.name] for v in g.outputs]


def to_jax(graph: Graph) -> Callable:
    """``fn(params: tuple, *inputs) -> list`` with params in ``graph.params`` order."""
    names = tuple(graph.params)

    def fn(params, *inputs):
        ctx = LoweringContext(bind_symbols(graph, inputs), dict(zip(names, params)))
        return run_body(graph, list(inputs), ctx)

    return fn
