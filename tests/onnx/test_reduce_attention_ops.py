"""Reductions, einsum, attention, control flow, recurrent and spectral ONNX ops against
onnx's reference evaluator on random inputs."""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import tensorsmith
from tensorsmith import ir
from tensorsmith.frontends.onnx import import_onnx
from tensorsmith.ir import Graph, GraphBuilder, OpTypeError, TensorType, Value

sys.path.insert(0, os.path.dirname(__file__))
from oracle import compare_with_oracle  # noqa: E402

RNG = np.random.default_rng(0)
ONNX_TYPE = {np.dtype(np.float32): T.FLOAT, np.dtype(np.float64): T.DOUBLE,
             np.dtype(np.int64): T.INT64, np.dtype(np.int32): T.INT32, np.dtype(np.bool_): T.BOOL}


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def i64(*v):
    return np.asarray(v, np.int64)


def model(nodes, inputs: dict, outputs, consts=None, opset=18, out_type=T.UNDEFINED):
    """A model over ``nodes``; ``inputs`` name -> example array, ``consts`` initializers."""
    consts = consts or {}
    g = h.make_graph(nodes, "g",
                     [h.make_tensor_value_info(k, ONNX_TYPE[v.dtype], v.shape) for k, v in inputs.items()],
                     [h.make_tensor_value_info(o, out_type, None) if out_type  # no type: inferred
                      else h.make_empty_tensor_value_info(o) for o in outputs],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def single(op, inputs: dict, consts=None, opset=18, n_out=1, order=None, out_type=T.UNDEFINED,
           **attrs):
    """One ``op`` node; ``order`` lists its input names ('' for an omitted optional one)."""
    consts = consts or {}
    names = order if order is not None else list(inputs) + list(consts)
    node = h.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    return model([node], inputs, [f"y{i}" for i in range(n_out)], consts, opset, out_type)


def check(m, inputs: dict, rtol=1e-5, atol=1e-5, oracle="reference"):
    """Compile ``m``, run it on ``inputs`` and compare every output with onnx's reference
    evaluator (or onnxruntime, where the reference lacks a feature or an old opset's form)."""
    compiled, got = compare_with_oracle(m, inputs, rtol, atol, oracle)
    return compiled


def ops_of(m) -> set[str]:
    return {n.op for n in import_onnx(m).walk()}


# --- reductions ----------------------------------------------------------------------------------
def test_reduce_sum_axes_attribute_at_opset11_and_input_at_opset13_agree():
    x = rand(3, 4, 5)
    m11 = single("ReduceSum", {"x": x}, opset=11, axes=[0, -1], keepdims=0)
    m13 = single("ReduceSum", {"x": x}, {"axes": i64(0, -1)}, opset=13, keepdims=0)
    a = check(m11, {"x": x})(x)[0]
    b = check(m13, {"x": x})(x)[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_reduce_sum_empty_axes_reduces_all_or_nothing():
    x = rand(2, 3)
    check(single("ReduceSum", {"x": x}, {"axes": np.zeros(0, np.int64)}, opset=13), {"x": x})
    noop = single("ReduceSum", {"x": x}, {"axes": np.zeros(0, np.int64)}, opset=13,
                  noop_with_empty_axes=1)
    check(noop, {"x": x})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions_match_reference(op, keepdims):
    x = np.abs(rand(2, 3, 4)) + 0.1  # positive so ReduceLogSum is defined
    check(single(op, {"x": x}, {"axes": i64(1)}, opset=18, keepdims=keepdims), {"x": x})
    # before opset 18 the axes are an attribute
    check(single(op, {"x": x}, opset=13, axes=[0, 2], keepdims=keepdims), {"x": x})


def test_reduce_max_of_bools():
    x = RNG.random((3, 4)) > 0.5
    check(single("ReduceMax", {"x": x}, {"axes": i64(1)}, opset=20, keepdims=0), {"x": x})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reductions_select_last_index(op):
    x = RNG.integers(0, 3, (4, 6)).astype(np.float32)  # many ties
    for last in (0, 1):
        check(single(op, {"x": x}, opset=13, axis=1, keepdims=0, select_last_index=last), {"x": x})


def test_cumsum_exclusive_reverse_and_topk():
    x = rand(3, 5)
    for excl, rev in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        m = single("CumSum", {"x": x}, {"axis": np.asarray(1, np.int64)}, opset=14, exclusive=excl,
                   reverse=rev)
        check(m, {"x": x})
    for largest in (0, 1):
        check(single("TopK", {"x": x}, {"k": i64(3)}, opset=11, n_out=2, axis=1, largest=largest),
              {"x": x})


def test_hardmax_lpnorm_lrn():
    x = rand(2, 3, 4)
    check(single("Hardmax", {"x": x}, opset=13, axis=1), {"x": x})
    # opset < 13 flattens to 2-D at axis; the reference evaluator only knows the new form
    check(single("Hardmax", {"x": x}, opset=11, axis=1, out_type=T.FLOAT), {"x": x}, oracle="ort")
    check(single("LpNormalization", {"x": x}, opset=1, axis=-1, p=2), {"x": x})
    # the reference's L1 norm forgets abs() for negative values; onnxruntime has it
    check(single("LpNormalization", {"x": x}, opset=1, axis=1, p=1, out_type=T.FLOAT), {"x": x},
          oracle="ort")
    x4 = rand(2, 5, 3, 3)
    # the reference's LRN loops over the batch dim instead of channels; onnxruntime is right
    check(single("LRN", {"x": x4}, opset=13, size=3, alpha=1e-3, beta=0.75, bias=2.0,
                 out_type=T.FLOAT), {"x": x4}, rtol=1e-4, oracle="ort")


@pytest.mark.parametrize("eq,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(4, 4)]),
    ("...ij,...jk", [(2, 3, 4), (2, 4, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("i,i", [(5,), (5,)]),
    ("bij->jb", [(2, 3, 4)]),
])
def test_einsum(eq, shapes):
    xs = {f"x{i}": rand(*s) for i, s in enumerate(shapes)}
    check(single("Einsum", xs, opset=12, equation=eq), xs, rtol=1e-4)


def test_det():
    x = rand(3, 4, 4)
    check(single("Det", {"x": x}, opset=11), {"x": x}, rtol=1e-4)


# --- attention family -----------------------------------------------------------------------------
@pytest.mark.parametrize("attrs,mask_shape,past", [
    ({}, None, False),
    ({"is_causal": 1}, None, True),
    ({"softcap": 2.0, "scale": 0.3}, (4, 6), False),
    ({"qk_matmul_output_mode": 3}, (2, 1, 4, 9), True),
])
def test_attention_4d_gqa_matches_reference(attrs, mask_shape, past):
    q, k, v = rand(2, 6, 4, 8), rand(2, 2, 6, 8), rand(2, 2, 6, 5)
    ins = {"q": q, "k": k, "v": v}
    order = ["q", "k", "v"]
    if mask_shape is not None:
        ins["mask"] = rand(*mask_shape)
    order.append("mask" if mask_shape is not None else "")
    if past:
        ins["pk"], ins["pv"] = rand(2, 2, 3, 8), rand(2, 2, 3, 5)
        order += ["pk", "pv"]
    n_out = 4 if "qk_matmul_output_mode" in attrs else (3 if past else 1)
    m = single("Attention", ins, opset=23, n_out=n_out, order=order, **attrs)
    check(m, ins, rtol=1e-4)


def test_attention_3d_with_bool_mask_and_window():
    q, k, v = rand(2, 4, 16), rand(2, 6, 8), rand(2, 6, 8)
    mask = RNG.random((4, 6)) > 0.3
    ins = {"q": q, "k": k, "v": v, "mask": mask}
    m = single("Attention", ins, opset=25, q_num_heads=4, kv_num_heads=2, is_causal=1,
               left_window_size=2)
    check(m, ins, rtol=1e-4)


def test_rotary_embedding_and_rms_normalization():
    x = rand(2, 4, 3, 8)
    cos, sin = rand(10, 4), rand(10, 4)
    pos = RNG.integers(0, 10, (2, 3)).astype(np.int64)
    for inter in (0, 1):
        ins = {"x": x, "cos": cos, "sin": sin, "pos": pos}
        check(single("RotaryEmbedding", ins, opset=23, interleaved=inter), ins)
    w = rand(3, 8)
    check(single("RMSNormalization", {"x": x, "w": w}, opset=23, axis=2, epsilon=1e-3),
          {"x": x, "w": w}, rtol=1e-4)


# --- control flow --------------------------------------------------------------------------------
def _branch(name, value_name, expr_nodes, out_name):
    return h.make_graph(expr_nodes, name, [], [h.make_tensor_value_info(out_name, T.FLOAT, [3])])


def test_if_with_runtime_condition_becomes_cond():
    x = rand(3)
    then_g = _branch("then", "x", [h.make_node("Mul", ["x", "x"], ["t"])], "t")
    else_g = _branch("else", "x", [h.make_node("Neg", ["x"], ["e"])], "e")
    node = h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    m = model([node], {"c": np.asarray(True), "x": x}, ["y"], opset=13)
    assert "cond" in ops_of(m)
    for c in (True, False):
        check(m, {"c": np.asarray(c), "x": x})


def test_if_with_known_condition_inlines_the_branch():
    x = rand(3)
    then_g = _branch("then", "x", [h.make_node("Mul", ["x", "x"], ["t"])], "t")
    else_g = _branch("else", "x", [h.make_node("Neg", ["x"], ["e"])], "e")
    node = h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    m = model([node], {"x": x}, ["y"], {"c": np.asarray(False)}, opset=13)
    assert ops_of(m) == {"neg"}
    check(m, {"x": x})


def _counting_body(with_scan: bool):
    """Loop body: acc_out = acc_in * 0.5 + x (x read from outside); optional scan output."""
    nodes = [h.make_node("Mul", ["acc_in", "half"], ["t"]),
             h.make_node("Add", ["t", "x"], ["acc_out"]),
             h.make_node("Identity", ["cond_in"], ["cond_out"])]
    outs = [h.make_tensor_value_info("cond_out", T.BOOL, []),
            h.make_tensor_value_info("acc_out", T.FLOAT, [3])]
    if with_scan:
        nodes.append(h.make_node("Cast", ["i"], ["i_f"], to=T.FLOAT))
        nodes.append(h.make_node("Mul", ["acc_out", "i_f"], ["s"]))
        outs.append(h.make_tensor_value_info("s", T.FLOAT, [3]))
    ins = [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
           h.make_tensor_value_info("acc_in", T.FLOAT, [3])]
    return h.make_graph(nodes, "body", ins, outs,
                        [numpy_helper.from_array(np.asarray(0.5, np.float32), "half")])


def test_loop_with_runtime_trip_count_becomes_while_loop():
    x, acc = rand(3), rand(3)
    node = h.make_node("Loop", ["n", "c", "acc"], ["out"], body=_counting_body(False))
    ins = {"n": np.asarray(4, np.int64), "c": np.asarray(True), "acc": acc, "x": x}
    m = model([node], ins, ["out"], opset=13)
    assert "while_loop" in ops_of(m)
    for n, c in [(0, True), (1, True), (5, True), (5, False)]:
        check(m, {**ins, "n": np.asarray(n, np.int64), "c": np.asarray(c)})


def test_loop_without_condition_runs_trip_count_times():
    # the reference evaluator runs no iteration when cond is omitted, so numpy is the oracle
    x, acc = rand(3), rand(3)
    node = h.make_node("Loop", ["n", "", "acc"], ["out"], body=_counting_body(False))
    m = model([node], {"n": np.asarray(4, np.int64), "acc": acc, "x": x}, ["out"], opset=13)
    with jax.enable_x64(True):
        run = tensorsmith.compile(m, target="cpu")
        for n in (0, 3):
            want = acc.astype(np.float64)
            for _ in range(n):
                want = want * 0.5 + x
            np.testing.assert_allclose(np.asarray(run(np.asarray(n, np.int64), acc, x)[0]), want,
                                       rtol=1e-6)


def test_loop_with_scan_outputs_becomes_scan():
    x, acc = rand(3), rand(3)
    node = h.make_node("Loop", ["n", "c", "acc"], ["out", "stacked"], body=_counting_body(True))
    consts = {"n": np.asarray(70, np.int64), "c": np.asarray(True)}  # too long to unroll
    m = model([node], {"acc": acc, "x": x}, ["out", "stacked"], consts, opset=13)
    assert "scan" in ops_of(m)
    check(m, {"acc": acc, "x": x}, rtol=1e-4)


def test_scan9_reverse_direction_and_axes():
    body = h.make_graph(
        [h.make_node("Add", ["s_in", "xt"], ["s_out"]), h.make_node("Mul", ["s_out", "w"], ["y"])],
        "body",
        [h.make_tensor_value_info("s_in", T.FLOAT, [2]), h.make_tensor_value_info("xt", T.FLOAT, [2])],
        [h.make_tensor_value_info("s_out", T.FLOAT, [2]), h.make_tensor_value_info("y", T.FLOAT, [2])])
    node = h.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                       scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1])
    ins = {"s0": rand(2), "x": rand(2, 5), "w": rand(2)}
    # the reference evaluator has no reverse directions
    check(model([node], ins, ["s", "ys"], opset=11, out_type=T.FLOAT), ins, oracle="ort")


@pytest.mark.parametrize("op,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_bidirectional_with_bias_and_initial_state(op, gates):
    hs, steps, batch, inp = 3, 4, 2, 5
    ins = {"x": rand(steps, batch, inp), "w": rand(2, gates * hs, inp) * 0.5,
           "r": rand(2, gates * hs, hs) * 0.5, "b": rand(2, 2 * gates * hs) * 0.1,
           "h0": rand(2, batch, hs)}
    order = ["x", "w", "r", "b", "", "h0"]
    attrs = {"hidden_size": hs, "direction": "bidirectional"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    m = single(op, ins, opset=14, n_out=2, order=order, **attrs)
    assert "scan" in ops_of(m)
    check(m, ins, rtol=1e-4)


# --- spectral ------------------------------------------------------------------------------------
@pytest.mark.parametrize("last,inverse,onesided", [(1, 0, 0), (1, 0, 1), (2, 1, 0), (2, 0, 0)])
def test_dft(last, inverse, onesided):
    x = rand(2, 8, 3, last)
    m = single("DFT", {"x": x}, {"axis": i64(1).reshape(())}, opset=20, inverse=inverse,
               onesided=onesided)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


def test_stft_with_window():
    ins = {"sig": rand(1, 40, 1), "win": np.hanning(8).astype(np.float32)}
    m = single("STFT", ins, {"step": np.asarray(4, np.int64)}, opset=17, order=["sig", "step", "win"])
    check(m, ins, rtol=1e-4, atol=1e-4)


# --- the IR ops behind them -----------------------------------------------------------------------
def test_cond_rejects_branches_of_different_types():
    b = GraphBuilder("main")
    p = b.input(TensorType((), "bool"), "p")
    x = b.input(TensorType((3,), "f32"), "x")
    then_in = Value("t_x", x.type)
    else_in = Value("e_x", x.type)
    then_r = Graph("then", [then_in], [then_in], [], {})
    bad = GraphBuilder("else", namer=b.namer)
    bad.inputs.append(else_in)
    y = bad.op("convert", else_in, dtype="f64")
    with pytest.raises(OpTypeError, match="else-branch"):
        b.op("cond", p, x, regions=[then_r, bad.build([y])])


def test_while_loop_prints_parses_and_runs():
    b = GraphBuilder("main")
    x = b.input(TensorType((), "i32"), "x")
    cond = GraphBuilder("c", namer=b.namer)
    ci = cond.input(TensorType((), "i32"))
    lim = cond.constant(10, "i32")
    body = GraphBuilder("b", namer=b.namer)
    bi = body.input(TensorType((), "i32"))
    two = body.constant(2, "i32")
    out = b.op("while_loop", x, num_carry=1,
               regions=[cond.build([cond.op("lt", ci, lim)]), body.build([body.op("mul", bi, two)])])
    g = b.build([out])
    ir.verify(g)
    assert ir.parse(g.to_text()).to_text() == g.to_text()
    from tensorsmith import codegen
    run = codegen.executor(g)
    assert int(run(np.asarray(3, np.int32))[0]) == 12  # 3 -> 6 -> 12
