"""Run a graph on this host: the executor that the pass context hands to passes."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from ..ir import Graph
from .interpreter import to_jax
from .target import needs_x64, x64_scope

EAGER_MAX_NODES = 8
"""Graphs this small run op by op: JAX caches each primitive's executable, so a pass that
evaluates many tiny graphs (constant folding) pays no XLA compile per graph."""


def executor(graph: Graph, target: str = "cpu", jit: bool | None = None) -> Callable[..., list]:
    """``fn(*inputs) -> list[np.ndarray]`` running ``graph`` on ``target`` (jitted unless tiny)."""
    fn = to_jax(graph)
    if jit is None:
        jit = sum(1 for _ in graph.walk()) > EAGER_MAX_NODES
    run_fn = jax.jit(fn) if jit else fn
    device = jax.devices(target)[0]
    wide = needs_x64(graph)
    with x64_scope(wide):
        params = tuple(jax.device_put(np.asarray(a), device) for a in graph.params.values())

    def run(*inputs):
        with jax.default_device(device), x64_scope(wide):
            return [np.asarray(o) for o in run_fn(params, *inputs)]

    return run
