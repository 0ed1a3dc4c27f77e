"""Run a graph on this host: the executor that the pass context hands to passes."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from ..ir import Graph
from .interpreter import to_jax
from .target import check_compiler_options, needs_x64, x64_scope

EAGER_MAX_NODES = 8
"""Graphs this small run op by op: JAX caches each primitive's executable, so a pass that
evaluates many tiny graphs (constant folding) pays no XLA compile per graph."""


def executor(graph: Graph, target: str = "cpu", jit: bool | None = None,
             compiler_options: dict | None = None) -> Callable[..., list]:
    """``fn(*inputs) -> list[np.ndarray]`` running ``graph`` on ``target`` (jitted unless tiny).

    ``compiler_options``: XLA options for its executables (implies jit); checked here, so a bad
    name raises CompilerOptionError before anything runs.
    """
    fn = to_jax(graph)
    if jit is None:
        jit = bool(compiler_options) or sum(1 for _ in graph.walk()) > EAGER_MAX_NODES
    device = jax.devices(target)[0]
    wide = needs_x64(graph)
    with x64_scope(wide):
        params = tuple(jax.device_put(np.asarray(a), device) for a in graph.params.values())
    run_fn = jax.jit(fn) if jit else fn
    if jit and compiler_options:
        run_fn = _with_options(fn, check_compiler_options(compiler_options, target))

    def run(*inputs):
        with jax.default_device(device), x64_scope(wide):
            return [np.asarray(o) for o in run_fn(params, *inputs)]

    return run


def _with_options(fn, options: dict) -> Callable:
    """``fn`` jitted, each input signature compiled with XLA ``options`` (at its first call)."""
    jitted, compiled = jax.jit(fn), {}

    def call(params, *inputs):
        key = tuple((np.shape(x), np.dtype(x.dtype)) for x in inputs)
        exe = compiled.get(key)
        if exe is None:
            specs = [jax.ShapeDtypeStruct(s, d) for s, d in key]
            exe = compiled[key] = jitted.lower(params, *specs).compile(compiler_options=options)
        return exe(params, *inputs)

    return call
