"""Run a graph on this host: the executor that the pass context hands to passes."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from ..ir import Graph
from .interpreter import to_jax


def executor(graph: Graph, target: str = "cpu") -> Callable[..., list]:
    """``fn(*inputs) -> list[np.ndarray]`` running ``graph`` jitted on ``target``."""
    jitted = jax.jit(to_jax(graph))
    device = jax.devices(target)[0]
    params = tuple(jax.device_put(np.asarray(a), device) for a in graph.params.values())

    def run(*inputs):
        return [np.asarray(o) for o in jitted(params, *inputs)]

    return run
