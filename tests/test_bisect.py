"""tensorsmith.bisect: planted damage in the middle of a pipeline is found, pass and node."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import tensorsmith
from tensorsmith.bisection import compare_outputs
from tensorsmith.passes import PASSES, Option, register_pass, run_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO, fresh_inputs  # noqa: E402


# --- test-only passes that break the model on purpose -----------------------------------
def _scale_param(graph, ctx, param: str = "", factor: float = 1.0):
    """Multiply one weight by a factor (test damage)."""
    return graph.with_params({param: np.asarray(graph.params[param]) * np.float32(factor)})


def _add_to_sub(graph, ctx, node: str = ""):
    """Turn the named add node into a sub, keeping its output name (test damage)."""
    nodes = tuple(n.replace(op="sub") if n.name == node else n for n in graph.nodes)
    return graph.replace(nodes=nodes)


if "test-scale-param" not in PASSES:
    register_pass("test-scale-param", options=[Option("param", str, "", "param to damage"),
                                               Option("factor", float, 1.0, "scale factor")])(_scale_param)
if "test-add-to-sub" not in PASSES:
    register_pass("test-add-to-sub", options=[Option("node", str, "", "node to damage")])(_add_to_sub)


@pytest.fixture(scope="module")
def mlp():
    fn, params, args = ZOO["mlp"]()
    x = np.concatenate([np.asarray(fresh_inputs(args, seed=s)[0]) for s in range(16)])  # 64 rows
    inlined, _ = run_pipeline(tensorsmith.trace(fn, *args, params=params, batch_dim=True), "inline")
    return fn, params, args, x, inlined


def _rel_l2(ref, out):
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def _consumer(graph, param):
    return next(n for n in graph.nodes if any(v.name == param for v in n.inputs))


def test_scaled_weight_is_blamed_on_its_pass_and_node(mlp):
    fn, params, args, x, inlined = mlp
    res = tensorsmith.bisect(fn, *args, params=params, batch_dim=True, data=[x],
                             passes="inline,test-scale-param{param=layer1/w,factor=1.5},dce")
    assert [s.name for s in res.steps] == ["source", "inline", "test-scale-param", "dce"]
    assert res.worst_pass == "test-scale-param"

    # The step errors agree with the damaged JAX model measured directly in float64.
    damaged = jax.tree_util.tree_map(np.asarray, params)
    damaged["layer1"]["w"] = damaged["layer1"]["w"] * np.float32(1.5)
    ref, bad = np.asarray(fn(params, x)), np.asarray(fn(damaged, x))
    step = res.steps[2]
    assert step.rel_l2 == pytest.approx(_rel_l2(ref, bad), rel=1e-3)
    assert step.sqnr_db == pytest.approx(-20 * math.log10(step.rel_l2), rel=1e-6)
    assert step.max_abs == pytest.approx(float(np.max(np.abs(bad - ref))), rel=1e-3)
    assert step.top1 == pytest.approx(float(np.mean(ref.argmax(-1) == bad.argmax(-1))))
    assert res.steps[1].rel_l2 < 1e-6 and res.steps[3].rel_l2 == pytest.approx(step.rel_l2)

    # The node that reads the scaled weight ranks first: its output is off by exactly 50%.
    target = _consumer(inlined, "layer1/w")
    assert res.nodes[0].value == target.name and res.nodes[0].op == target.op
    assert res.nodes[0].local == pytest.approx(0.5, rel=1e-4)
    assert res.nodes[0].loc == target.loc and "zoo.py" in target.loc
    assert all(n.local < 1e-5 for n in res.nodes[1:])  # downstream drift, not their fault
    assert res.params == [("layer1/w", pytest.approx(0.5, rel=1e-6))]

    text = str(res)
    assert "test-scale-param <- worst" in text and f"%{target.name}" in text
    assert json.loads(json.dumps(res.as_dict()))["worst_pass"] == "test-scale-param"


def test_broken_node_ranks_before_the_values_it_poisons(mlp):
    fn, params, args, x, inlined = mlp
    bias_bcast = _consumer(inlined, "layer0/b")
    target = _consumer(inlined, bias_bcast.output.name)
    assert target.op == "add"
    res = tensorsmith.bisect(fn, *args, params=params, batch_dim=True, data=[x],
                             passes=f"inline,dce,test-add-to-sub{{node={target.name}}},dce",
                             labels=np.zeros(len(x), np.int64))
    assert res.worst_pass == "test-add-to-sub" and res.worst == 3
    assert res.nodes[0].value == target.name and res.nodes[0].local > 0.01
    downstream = res.nodes[1:]
    assert downstream and all(n.rel_l2 > 0 and n.local < 1e-5 for n in downstream)
    # the source step against the JAX function, and accuracy against the given labels
    ref = np.asarray(fn(params, x))
    assert res.steps[0].accuracy == pytest.approx(float(np.mean(ref.argmax(-1) == 0)))


def test_a_harmless_pipeline_names_no_pass(mlp):
    fn, params, args, x, _ = mlp
    res = tensorsmith.bisect(fn, *args, params=params, batch_dim=True, data=[x], passes="default")
    assert res.worst is None and res.nodes == []
    assert all(s.rel_l2 < 1e-6 and s.top1 == 1.0 for s in res.steps)
    assert "no pass added more than 1e-06 relative L2 error" in str(res)


def test_compare_outputs_edge_cases():
    ref = [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)]
    same = compare_outputs(ref, ref)
    assert same["rel_l2"] == 0 and math.isinf(same["sqnr_db"]) and same["top1"] == 1.0
    worse = compare_outputs(ref, [np.array([[2.0, 1.0], [3.0, 4.0]], np.float32)])
    assert worse["top1"] == 0.5 and worse["max_abs"] == 1.0
    assert worse["rel_l2"] == pytest.approx(math.sqrt(2 / 30))
    assert math.isinf(compare_outputs(ref, [np.zeros((3, 2))])["rel_l2"])  # shape changed


def test_wrong_number_of_inputs_is_named(mlp):
    fn, params, args, x, _ = mlp
    with pytest.raises(ValueError, match="takes 1 inputs"):
        tensorsmith.bisect(fn, *args, params=params, data=[x, x], passes="dce")


def test_a_non_finite_source_is_reported_not_blamed_on_a_pass():
    def model(params, x):
        return jax.numpy.log(x @ params["w"])  # log of negatives: NaN in the source itself

    p = {"w": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)}
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    ref = np.asarray(model(p, x))
    assert np.isnan(ref).any()
    res = tensorsmith.bisect(model, x, params=p, passes="canonicalize,dce")
    assert res.worst is None and res.nodes == []
    out_name = tensorsmith.trace(model, x, params=p).outputs[0].name
    want = (f"the JAX function model: output 0 (%{out_name}) has {int(np.isnan(ref).sum())} NaN "
            f"and 0 inf of {ref.size} values")
    assert res.nonfinite == [want]
    text = str(res)
    assert "already not finite" in text and want in text and "<- worst" not in text


def test_the_readme_example_needs_no_batch_dim():
    # README: r = tensorsmith.bisect(fn, x, params=p, passes="default", data=[x_test], labels=y_test)
    ex = tensorsmith.examples.load("digits-cnn")
    x_test, y_test = ex.eval_data
    res = tensorsmith.bisect(ex.fn, *ex.example_inputs, params=ex.params, passes="default",
                             data=[x_test], labels=y_test)
    acc = float(np.mean(np.asarray(ex.fn(ex.params, x_test)).argmax(-1) == y_test))
    assert res.steps[0].accuracy == pytest.approx(acc) and len(ex.example_inputs[0]) != len(x_test)
    assert res.worst is None


def test_data_of_the_wrong_shape_is_named(mlp):
    fn, params, args, x, inlined = mlp
    g = tensorsmith.trace(fn, *args, params=params)  # a graph: shapes fixed at the example's
    with pytest.raises(tensorsmith.UsageFailure, match=r"input %\w+ is f32\[4,\d+\]; the data for "
                                                       r"it has shape \(64, \d+\)"):
        tensorsmith.bisect(g, data=[x], passes="dce")
