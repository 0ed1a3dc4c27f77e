"""Run a graph on this host: the executor that the pass context hands to passes; how JAX
dispatches CPU executables (on the calling thread, set once at import)."""
from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

from ..ir import Graph
from .interpreter import to_jax
from ..errors import UsageFailure
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


# --- CPU dispatch ----------------------------------------------------------------------------
DISPATCH_ENV = "TENSORSMITH_CPU_DISPATCH"
JAX_DISPATCH_FLAG = "jax_cpu_enable_async_dispatch"
_dispatch: dict = {}  # "mode": "sync" | "async", "why": how it was decided


def setup_cpu_dispatch() -> tuple[str, str]:
    """Make JAX run CPU executables on the calling thread (once, before JAX's CPU client exists).

    With JAX's default async dispatch, every call of a program above ~1000 flops is handed to
    a pool thread and waited for: ~40-50 us a call on a 2-core host (issue 16: the MLP went
    from 105 to 56 us, onnxruntime 50 us), the whole cost of a small model. Results do not
    change; JAX code of the same process also runs synchronously on CPU. Left alone when the
    user set ``JAX_CPU_ENABLE_ASYNC_DISPATCH``, when ``TENSORSMITH_CPU_DISPATCH=async``, and
    when JAX's backends already exist (the client keeps the mode it was made with).
    Returns (mode, why).
    """
    if "mode" not in _dispatch:
        _dispatch["mode"], _dispatch["why"] = _decide_dispatch()
    return _dispatch["mode"], _dispatch["why"]


def _decide_dispatch() -> tuple[str, str]:
    raw = os.environ.get(DISPATCH_ENV, "sync").strip().lower()
    if raw not in ("sync", "async"):
        raise UsageFailure(f"{DISPATCH_ENV}={os.environ[DISPATCH_ENV]!r}: choose sync or async")
    if JAX_DISPATCH_FLAG not in jax.config.values:
        return "async", f"this JAX has no {JAX_DISPATCH_FLAG}"
    current = "async" if jax.config.values[JAX_DISPATCH_FLAG] else "sync"
    if JAX_DISPATCH_FLAG.upper() in os.environ:
        return current, f"the user's {JAX_DISPATCH_FLAG.upper()}"
    if raw == "async":
        return current, f"{DISPATCH_ENV}=async"
    try:  # private, but the only way to know whether the CPU client exists already
        from jax._src.xla_bridge import backends_are_initialized
        made = backends_are_initialized()
    except ImportError:
        made = False
    if made:
        return current, "JAX's backends existed before tensorsmith was imported"
    jax.config.update(JAX_DISPATCH_FLAG, False)
    return "sync", "default"
