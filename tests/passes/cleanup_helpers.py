"""Shared by the clean-up pass tests: run a pipeline on IR text, compare IR text and numerics."""
from __future__ import annotations

import textwrap

import numpy as np

from tensorsmith.codegen import executor
from tensorsmith.ir import Graph, numpy_dtype, parse
from tensorsmith.passes import PassContext, run_pipeline


def ir(text: str) -> str:
    """IR text written indented inside a test, as the printer writes it."""
    return textwrap.dedent(text).lstrip("\n")


def run(text: str, pipeline: str, params: dict | None = None, ctx: PassContext | None = None):
    """(graph before, graph after, context) for ``pipeline`` run on the IR ``text``."""
    graph = parse(ir(text), params=params)
    ctx = ctx or PassContext(executor=executor)
    out, _ = run_pipeline(graph, pipeline, ctx)
    return graph, out, ctx


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Random arrays for the graph inputs (normal floats with a few exact zeros, small ints)."""
    r = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        dt = numpy_dtype(v.dtype)
        if v.dtype == "bool":
            a = r.random(v.shape) < 0.5
        elif np.issubdtype(dt, np.integer):
            a = r.integers(-5, 6, v.shape)
        else:
            a = r.standard_normal(v.shape)
            a.flat[::3] = 0.0
        out.append(np.asarray(a).astype(dt))
    return out


def assert_same_numerics(before: Graph, after: Graph, seed: int = 0, tol: float = 1e-6) -> None:
    """Both graphs compute the same outputs on random inputs (run through codegen)."""
    inputs = random_inputs(before, seed)
    want, got = executor(before)(*inputs), executor(after)(*inputs)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.shape == g.shape
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol, atol=tol)


def remarks(ctx: PassContext, kind: str | None = None) -> list[str]:
    """The remarks as printed (``[pass] kind: %node: message``), optionally of one kind."""
    return [str(r) for r in ctx.remarks if kind is None or r.kind == kind]
