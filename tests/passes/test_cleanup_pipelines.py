"""Random pipelines of the clean-up passes keep every zoo model computing what JAX computes."""
from __future__ import annotations

import functools
import os
import sys

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from zoo import ZOO, call, fresh_inputs  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.codegen import executor  # noqa: E402
from tensorsmith.ir import graph_stats  # noqa: E402
from tensorsmith.passes import PassContext, run_pipeline  # noqa: E402

STEPS = ["dce", "cse", "cse{params=true}", "canonicalize", "fold-constants", "inline"]


@functools.lru_cache(maxsize=None)
def traced(name):
    """(graph, flat inputs, JAX's own outputs) for a zoo model on fresh inputs."""
    fn, params, args = ZOO[name]()
    graph = tensorsmith.trace(fn, *args, params=params)
    inputs = fresh_inputs(args)
    want = [np.asarray(o) for o in jax.tree_util.tree_leaves(call(fn, params, *inputs))]
    return graph, [np.asarray(a) for a in jax.tree_util.tree_leaves(inputs)], want


def assert_matches_jax(name, pipeline):
    graph, inputs, want = traced(name)
    out, history = run_pipeline(graph, pipeline, PassContext(executor=executor))
    got = executor(out)(*inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    return graph, out, history


@pytest.mark.parametrize("name", sorted(ZOO))
@settings(max_examples=6, deadline=None, database=None)
@given(steps=st.lists(st.sampled_from(STEPS), min_size=1, max_size=6))
def test_random_cleanup_pipelines_keep_numerics(name, steps):
    assert_matches_jax(name, ",".join(steps))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_default_pipeline_keeps_numerics_and_never_grows_the_model(name):
    graph, out, history = assert_matches_jax(name, "default")
    before, after = graph_stats(graph), graph_stats(out)
    assert [r.name for r in history] == ["canonicalize", "cse", "fold-constants", "dce"]
    assert len(out.nodes) <= len(graph.nodes)
    assert after.as_dict()["param_bytes"] <= before.as_dict()["param_bytes"]
