"""fold-constants: golden IR text for what must fold and what must not, plus numerics."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import assert_same_numerics, ir, remarks, run  # noqa: E402

from tensorsmith.codegen import executor  # noqa: E402
from tensorsmith.ir import parse  # noqa: E402
from tensorsmith.passes import PassContext, run_pipeline  # noqa: E402

PIPELINE = "fold-constants"
R = np.random.default_rng(0)
KERNEL = R.standard_normal((3, 4)).astype(np.float32)
BIAS = R.standard_normal(3).astype(np.float32)

KERNEL_CHAIN = """
    graph @main(%x: f32[2,4]) {
      param @params/Conv_0/kernel: f32[3,4]
      %0: f32[4,3] = transpose(@params/Conv_0/kernel) {permutation=(1, 0)}
      %1: f32[] = constant() {dtype="f32", value=2.0}
      %2: f32[4,3] = mul(%0, %1)
      %3: f32[2,3] = dot_general(%x, %2) {contracting_dims=((1,), (0,))}
      return %3
    }
    """


def test_a_param_chain_folds_into_one_param_named_after_its_source():
    before, out, ctx = run(KERNEL_CHAIN, PIPELINE, params={"params/Conv_0/kernel": KERNEL})
    assert out.to_text() == ir("""
        graph @main(%x: f32[2,4]) {
          param @params/Conv_0/kernel.folded: f32[4,3]  # 12 elems, 48 B, 0.0% zero
          %3: f32[2,3] = dot_general(%x, @params/Conv_0/kernel.folded) {contracting_dims=((1,), (0,))}
          return %3
        }
        """)
    np.testing.assert_array_equal(out.params["params/Conv_0/kernel.folded"], KERNEL.T * 2)
    assert remarks(ctx) == [
        "[fold-constants] applied: %0: folded transpose into @params/Conv_0/kernel.folded (f32[4,3])",
        "[fold-constants] applied: %2: folded mul into @params/Conv_0/kernel.folded (f32[4,3])"]
    assert_same_numerics(before, out)


def test_the_callers_params_are_left_alone():
    graph = parse(ir(KERNEL_CHAIN), params={"params/Conv_0/kernel": KERNEL})
    out, _ = run_pipeline(graph, PIPELINE, PassContext(executor=executor))
    assert list(graph.params) == ["params/Conv_0/kernel"] and len(graph.nodes) == 4
    np.testing.assert_array_equal(graph.params["params/Conv_0/kernel"], KERNEL)
    assert list(out.params) == ["params/Conv_0/kernel.folded"]


def test_scalars_and_uniform_results_become_constant_nodes():
    before, out, _ = run("""
        graph @main(%x: f32[64,64]) {
          %0: f32[] = constant() {dtype="f32", value=2.0}
          %1: f32[] = constant() {dtype="f32", value=3.0}
          %2: f32[] = mul(%0, %1)
          %3: f32[64,64] = broadcast_in_dim(%2) {broadcast_dimensions=(), shape=(64, 64)}
          %4: f32[64,64] = add(%x, %3)
          %5: f32[] = constant() {dtype="f32", value=-0.0}
          %6: f32[] = neg(%5)
          %7: f32[64,64] = mul(%4, %6)
          return %7
        }
        """, PIPELINE)
    assert out.to_text() == ir("""
        graph @main(%x: f32[64,64]) {
          %9: f32[64,64] = constant() {dtype="f32", shape=(64, 64), value=6.0}
          %4: f32[64,64] = add(%x, %9)
          %10: f32[] = constant() {dtype="f32", value=0.0}
          %7: f32[64,64] = mul(%4, %10)
          return %7
        }
        """)
    assert_same_numerics(before, out)


BROADCASTS = """
    graph @main(%x: f32[100,3]) {
      param @b: f32[3]
      %0: f32[100,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(100, 3)}
      %1: f32[1,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(1, 3)}
      %2: f32[100,3] = add(%x, %0)
      %3: f32[100,3] = add(%2, %1)
      return %3
    }
    """


def test_results_much_bigger_than_their_params_are_not_materialized():
    before, out, ctx = run(BROADCASTS, PIPELINE, params={"b": BIAS})
    assert out.to_text() == ir("""
        graph @main(%x: f32[100,3]) {
          param @b: f32[3]  # 3 elems, 12 B, 0.0% zero
          param @b.folded: f32[1,3]  # 3 elems, 12 B, 0.0% zero
          %0: f32[100,3] = broadcast_in_dim(@b) {broadcast_dimensions=(1,), shape=(100, 3)}
          %2: f32[100,3] = add(%x, %0)
          %3: f32[100,3] = add(%2, @b.folded)
          return %3
        }
        """)
    assert remarks(ctx, "missed") == ["[fold-constants] missed: %0: did not fold: its result "
                                      "(1.2 KiB) would be over 2x the 12 B of params it reads"]
    assert_same_numerics(before, out)


def test_max_bytes_refuses_big_results():
    _, out, ctx = run(KERNEL_CHAIN, "fold-constants{max_bytes=16}",
                      params={"params/Conv_0/kernel": KERNEL})
    assert out.to_text() == parse(ir(KERNEL_CHAIN), params={"params/Conv_0/kernel": KERNEL}).to_text()
    assert remarks(ctx) == ["[fold-constants] missed: %0: did not fold: the result (48 B) is over "
                            "max_bytes=16"]


SOURCES = """
    graph @main(%x: i32[10]) {
      param @labels: i32[10]
      param @w: f32[4,4]
      %0: i32[10] = iota() {axis=0, dtype="i32", shape=(10,)}
      %1: bool[10] = eq(%0, @labels)
      %2: i32[10] = add(%0, %x)
      %3: f32[4,4] = transpose(@w) {permutation=(1, 0)}
      %4: f32[4,4] = neg(@w)
      %5: f32[4,4] = add(%3, %4)
      %8: f32[4,4] = composite(%5) {name="jax.nn.relu"} {
        ^jax.nn.relu(%6: f32[4,4]):
          %9: f32[] = constant() {dtype="f32", value=0.0}
          %7: f32[4,4] = max(%6, %9)
          return %7
      }
      %10: f32[4,2], %11: i32[4,2] = top_k(@w) {k=2}
      return %1, %2, %3, %8, %10, %11
    }
    """
SOURCE_PARAMS = {"labels": np.arange(10, dtype=np.int32) % 3,
                 "w": R.standard_normal((4, 4)).astype(np.float32)}


def test_iota_composites_and_multi_output_nodes_fold():
    before, out, ctx = run(SOURCES, PIPELINE, params=SOURCE_PARAMS)
    # iota itself stays (free to recompute); a param used twice keeps its name for the other use
    assert out.to_text() == ir("""
        graph @main(%x: i32[10]) {
          param @labels.folded: bool[10]  # 10 elems, 10 B, 70.0% zero
          param @w.folded: f32[4,4]  # 16 elems, 64 B, 0.0% zero
          param @w.folded1: f32[4,4]  # 16 elems, 64 B, 62.5% zero
          param @w.folded2: f32[4,2]  # 8 elems, 32 B, 0.0% zero
          param @w.folded3: i32[4,2]  # 8 elems, 32 B, 25.0% zero
          %0: i32[10] = iota() {axis=0, dtype="i32", shape=(10,)}
          %2: i32[10] = add(%0, %x)
          return @labels.folded, %2, @w.folded, @w.folded1, @w.folded2, @w.folded3
        }
        """)
    w = SOURCE_PARAMS["w"]
    np.testing.assert_array_equal(out.params["labels.folded"], np.arange(10) == np.arange(10) % 3)
    np.testing.assert_array_equal(out.params["w.folded1"], np.maximum(w.T - w, 0))
    assert_same_numerics(before, out)


def test_without_an_executor_nothing_folds_and_a_remark_says_why():
    graph = parse(ir(KERNEL_CHAIN), params={"params/Conv_0/kernel": KERNEL})
    ctx = PassContext()
    out, _ = run_pipeline(graph, PIPELINE, ctx)
    assert out.to_text() == graph.to_text()
    assert remarks(ctx) == ["[fold-constants] missed: did not fold constants: the pass context has "
                            "no executor (compile() provides one; else PassContext(executor=...))"]


def test_params_declared_without_weights_are_not_folded():
    _, out, ctx = run(KERNEL_CHAIN, PIPELINE)  # parsed without arrays
    assert "transpose(@params/Conv_0/kernel)" in out.to_text()
    assert remarks(ctx) == ["[fold-constants] missed: %0: did not fold: param "
                            "@params/Conv_0/kernel is declared but not loaded"]


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
def test_a_result_of_the_wrong_dtype_is_never_stored():
    # jax runs without x64 here, so an f64 result comes back as f32: that must not become an
    # f32 param where the IR says f64 (the verifier in run_pipeline would catch it).
    p = R.standard_normal(4).astype(np.float32)
    _, out, ctx = run("""
        graph @main() {
          param @p: f32[4]
          %0: f64[4] = convert(@p) {dtype="f64"}
          return %0
        }
        """, PIPELINE, params={"p": p})
    folded = {k: a for k, a in out.params.items() if k != "p"}
    if folded:  # x64 enabled by someone: the fold must then be exact
        (arr,) = folded.values()
        assert arr.dtype == np.float64
        np.testing.assert_array_equal(arr, p.astype(np.float64))
    else:
        assert remarks(ctx) == ["[fold-constants] missed: %0: did not fold: the executor returned "
                                "f32[4] for f64[4]"]


def test_nodes_reading_graph_inputs_are_not_folded():
    text = """
        graph @main(%x: f32[4]) {
          param @w: f32[4]
          %0: f32[4] = mul(%x, @w)
          %1: f32[] = constant() {dtype="f32", value=1.0}
          %2: f32[4] = add(%0, %1)
          return %2
        }
        """
    _, out, ctx = run(text, PIPELINE, params={"w": np.ones(4, np.float32)})
    assert out.to_text() == parse(ir(text), params={"w": np.ones(4, np.float32)}).to_text()
    assert ctx.remarks == []


def test_max_bytes_must_not_be_negative():
    from tensorsmith.passes import PassOptionError
    with pytest.raises(PassOptionError, match="max_bytes"):
        run(KERNEL_CHAIN, "fold-constants{max_bytes=-1}")


def test_everything_foldable_is_evaluated_in_one_compiled_call():
    # Op-by-op evaluation would compile every primitive for every new shape; one batch
    # compiles once. A failing batch falls back to node-by-node evaluation.
    text = """graph @main(%x: f32[4]) {
  param @v: f32[4]
  param @w: f32[4]
  %0: f32[] = constant() {dtype="f32", value=1e-05}
  %1: f32[4] = add(@v, %0)
  %2: f32[4] = rsqrt(%1)
  %3: f32[4] = mul(%2, @w)
  %4: f32[4] = mul(%x, %3)
  return %4
}
"""
    rng = np.random.default_rng(0)
    params = {"v": rng.uniform(0.5, 2, 4).astype(np.float32), "w": rng.normal(size=4).astype(np.float32)}
    calls = []

    def counting(graph, jit=None):
        calls.append((len(graph.nodes), jit))
        return executor(graph, jit=jit)

    g = parse(text, params=params)
    out, _ = run_pipeline(g, "fold-constants", PassContext(executor=counting))
    assert calls == [(4, True)]  # constant + add, rsqrt, mul: one compiled program
    assert [n.op for n in out.nodes] == ["mul"]
    assert_same_numerics(g, out)
    (folded,) = out.params.values()
    np.testing.assert_allclose(folded, params["w"] / np.sqrt(params["v"] + 1e-5),
                               rtol=1e-6)

    def batch_fails(graph, jit=None):
        calls.append((len(graph.nodes), jit))
        if jit:
            raise RuntimeError("no batch today")
        return executor(graph, jit=jit)

    calls.clear()
    out2, _ = run_pipeline(g, "fold-constants", PassContext(executor=batch_fails))
    assert calls[0] == (4, True) and len(calls) == 4  # then add, rsqrt, mul one by one
    assert out2.to_text() == out.to_text()


def test_what_sizes_refuse_is_never_evaluated():
    # AveragePool's old divisor: a full-size `ones` pooled by reduce_window. The result cannot
    # be uniform (padding) and is far over 2x the params it reads (none): refused from its
    # type, so XLA never constant-folds it (that took 15-28 s on DenseNet-121).
    text = """graph @main(%x: f32[1,8,28,28]) {
  param @w: f32[8]
  %0: f32[1,8,28,28] = constant() {dtype="f32", shape=(1, 8, 28, 28), value=1.0}
  %1: f32[1,8,28,28] = reduce_window(%0) {kind="sum", padding=((0, 0), (0, 0), (1, 1), (1, 1)), window_dimensions=(1, 1, 3, 3), window_strides=(1, 1, 1, 1)}
  %2: f32[8] = neg(@w)
  %3: f32[8] = exp(%2)
  %4: f32[1,8,28,28] = div(%x, %1)
  return %4, %3
}
"""
    evaluated = []

    def recording(graph, jit=None):
        evaluated.extend(n.op for n in graph.nodes)
        return executor(graph, jit=jit)

    g = parse(text, params={"w": R.standard_normal(8).astype(np.float32)})
    ctx = PassContext(executor=recording)
    out, _ = run_pipeline(g, PIPELINE, ctx)
    assert "reduce_window" not in evaluated and evaluated == ["neg", "exp"]
    assert [n.op for n in out.nodes] == ["constant", "reduce_window", "div"]
    assert remarks(ctx, "missed") == ["[fold-constants] missed: %1: did not fold: its result "
                                      "(24.5 KiB) would be over 2x the 0 B of params it reads"]
    assert_same_numerics(g, out)


def test_one_param_read_by_many_foldable_nodes_does_not_multiply_the_model():
    # issue 15: each of 16 unary nodes reads the 1 KiB @w and makes 1 KiB; folding all of them
    # would make the weights 17 KiB. The model may at most double (MAX_GROWTH).
    unary = ["neg", "abs", "exp", "sin", "cos", "tanh", "sqrt", "square", "floor", "ceil",
             "sign", "logistic", "log1p", "expm1", "round", "relu"]
    lines = [f"  %{i}: f32[256] = {op}(@w)" for i, op in enumerate(unary)]
    lines += [f"  %{100 + i}: f32[256] = add(%x, %{i})" for i in range(len(unary))]
    rets = ", ".join(f"%{100 + i}" for i in range(len(unary)))
    text = "graph @main(%x: f32[256]) {\n  param @w: f32[256]\n" + "\n".join(lines) + \
        f"\n  return {rets}\n}}\n"
    w = np.abs(R.standard_normal(256)).astype(np.float32)
    before, out, ctx = run(text, PIPELINE, params={"w": w})
    total = sum(a.nbytes for a in out.params.values())
    assert total <= 2 * w.nbytes, list(out.params)
    assert len(out.params) == 2  # @w (still read) and one folded result
    missed = remarks(ctx, "missed")
    assert len(missed) == 15 and missed[0] == (
        "[fold-constants] missed: %1: did not fold: the model's folded weights would grow past "
        "2x its 1.0 KiB of params (already +1.0 KiB)")
    assert_same_numerics(before, out, tol=1e-5)
