"""Codegen: what XLA receives (StableHLO) and compiles (HLO), lowering errors, targets."""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from zoo import ZOO, traced  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith import codegen, ir  # noqa: E402
from tensorsmith.codegen import LoweringError, TargetError  # noqa: E402


def _ops(text: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, text))


@pytest.fixture(scope="module")
def cnn_model():
    fn, params, args = ZOO["cnn"]()
    return tensorsmith.compile(fn, *args, params=params, passes=[])  # codegen of the model as traced


def test_stablehlo_has_the_graph_ops(cnn_model):
    shlo = cnn_model.stablehlo()
    ops = _ops(shlo, r"stablehlo\.(\w+)")
    assert {"convolution", "dot_general", "reduce_window", "rsqrt", "maximum", "reshape"} <= ops
    # the grouped conv keeps its group count, the input keeps its shape
    assert "feature_group_count = 2" in shlo
    assert "tensor<2x8x8x3xf32>" in shlo


def test_hlo_is_xla_optimized_for_this_host(cnn_model):
    hlo = cnn_model.hlo()
    assert hlo.startswith("HloModule")
    ops = _ops(hlo, r"= \S+ ([\w-]+)\(")
    assert {"convolution", "dot", "reduce-window"} <= ops
    # one parameter per weight plus the input
    n_params = len(cnn_model.graph.params) + 1
    assert len(re.findall(r"ENTRY[\s\S]*", hlo)) == 1
    entry = hlo[hlo.index("ENTRY"):]
    assert len(re.findall(r"parameter\(\d+\)", entry)) == n_params


def test_stablehlo_keeps_symbolic_batch():
    fn, params, args = ZOO["mlp"]()
    cm = tensorsmith.compile(fn, *args, params=params, batch_dim=True, target="tpu")
    shlo = cm.stablehlo()
    assert "tensor<?x16xf32>" in shlo  # batch stays dynamic in what a TPU host will get


def test_composites_are_inlined_into_one_program():
    g = traced("transformer_block")
    assert any(n.op == "composite" for n in g.nodes)
    fn, params, args = ZOO["transformer_block"]()
    shlo = tensorsmith.compile(fn, *args, params=params).stablehlo()
    # softmax and gelu bodies are in the main function, not calls XLA cannot see through
    assert "stablehlo.exponential" in shlo and "stablehlo.tanh" in shlo
    assert "stablehlo.composite" not in shlo


def test_lowering_error_names_the_node_and_location():
    b = ir.GraphBuilder("bad")
    x = b.input(ir.TensorType((2, 3), "f32"), "x")
    y = b.op("reshape", x, shape=(3, 2), loc="model.py:7 (f)")
    g = b.build([y])
    # plant a node whose attrs pass the type rule but not XLA: reshape to a symbol never bound
    bad = g.replace(nodes=(g.nodes[0].replace(attrs=ir.Attrs({"shape": ("M", 2)})),),
                    outputs=(ir.Value(y.name, ir.TensorType(("M", 2), "f32")),))
    with pytest.raises(LoweringError, match=r"node %0 = reshape\(\.\.\.\) \[model\.py:7 \(f\)\]"):
        codegen.executor(bad)(np.ones((2, 3), np.float32))


def test_op_without_lowering_is_named():
    b = ir.GraphBuilder("g")
    x = b.input(ir.TensorType((2,), "f32"), "x")
    g = b.build([b.op("relu", x)])
    node = g.nodes[0].replace(op="no_such_op")
    with pytest.raises(LoweringError, match="'no_such_op' has no JAX lowering"):
        codegen.executor(g.replace(nodes=(node,)))(np.ones(2, np.float32))


@pytest.mark.parametrize("bad, close", [("tpus", "tpu"), ("CPU", "cpu"), ("cuda", "gpu"),
                                        ("gpux", "gpu")])
def test_unknown_target_names_the_closest(bad, close):
    fn, params, args = ZOO["mlp"]()
    with pytest.raises(TargetError, match=rf"unknown target '{bad}' \(did you mean '{close}'\?\)"):
        tensorsmith.compile(fn, *args, params=params, target=bad)


def test_executor_runs_graph_params():
    g = traced("closure")
    fn, _, args = ZOO["closure"]()
    (out,) = codegen.executor(g)(*args)
    np.testing.assert_allclose(out, np.asarray(fn(*args)), rtol=1e-5, atol=1e-6)
