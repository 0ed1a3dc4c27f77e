"""Symbol requirements placed by the ONNX frontend: the position-ids Slice of exported
transformers (``pos[:, :sequence]`` of a static table) stays symbolic by requiring
``sequence <= 512``, which each new call signature, and a loaded export, check."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

import tensorsmith
from tensorsmith.errors import CallError

RNG = np.random.default_rng(1)
TABLE = 16


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _model(nodes, inputs, inits, out="y"):
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info(out, T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _position_model():
    """y = x + pos[:, :sequence] (the pattern torch.onnx.export writes for BERT's position ids)."""
    pos = (RNG.standard_normal((1, TABLE, 4))).astype(np.float32)
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "one"], ["len"], axis=0),
        h.make_node("Unsqueeze", ["len", "zero1"], ["end"]),
        h.make_node("Slice", ["pos", "zero1", "end", "one1"], ["p"], name="/emb/Slice"),
        h.make_node("Add", ["x", "p"], ["y"], name="/emb/Add"),
    ]
    inits = [numpy_helper.from_array(pos, "pos"), _ints("one", 1), _ints("zero1", [0]),
             _ints("one1", [1])]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["batch", "sequence", 4])], inits)


def test_slice_by_sequence_stays_symbolic_and_matches_onnxruntime():
    m = _position_model()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(m)
    for shape in [(1, 3, 4), (2, 9, 4), (3, TABLE, 4)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(cm(x)[0]), sess.run(None, {"x": x})[0], rtol=1e-6)
    assert cm.cache_info().specializations == 0 and cm.symbolic
    text = cm.graph.to_text()
    assert "requires sequence <= 16  # /emb/Slice: Slice end sequence must fit in the axis of size 16" in text
    assert "f32[batch,sequence,4] = add(" in text


def test_a_call_past_the_table_is_refused_naming_the_requirement():
    m = _position_model()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((2, TABLE + 1, 4), np.float32)
    with pytest.raises(Exception):  # onnxruntime fails too, only later and less clearly
        sess.run(None, {"x": x})
    cm = tensorsmith.compile(m)
    with pytest.raises(CallError, match=r"input 'x' axis 1 \(sequence\) = 17, but the model "
                                        r"requires sequence <= 16 \(/emb/Slice"):
        cm(x)
    assert cm.cache_info().compiles == 0


def test_export_keeps_sequence_symbolic_and_the_loaded_model_checks_it(tmp_path):
    m = _position_model()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    path = tensorsmith.compile(m).export(tmp_path / "pos.tsx")
    lm = tensorsmith.load(path)
    assert "sequence" in str(lm.exported.in_avals[-1].shape)
    assert "requires sequence <= 16" in lm.graph.to_text()
    for shape in [(1, 5, 4), (4, 11, 4)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(lm(x)[0]), sess.run(None, {"x": x})[0], rtol=1e-6)
    with pytest.raises(CallError, match=r"axis 1 \(sequence\) = 20, but the model requires "
                                        r"sequence <= 16"):
        lm(np.zeros((1, 20, 4), np.float32))


def test_gather_with_run_time_negative_indices_over_a_symbolic_dim():
    nodes = [h.make_node("Flatten", ["x"], ["f"], axis=2),
             h.make_node("Reshape", ["f", "minus1"], ["flat"]),
             h.make_node("Gather", ["flat", "idx"], ["y"], axis=0)]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["batch", "sequence"]),
                       h.make_tensor_value_info("idx", T.INT64, ["k"])], [_ints("minus1", [-1])])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(m)
    for b, s, idx in [(1, 3, [-1, 0, 2]), (2, 5, [-10, 9, -3, 4]), (3, 4, [-12])]:
        feeds = {"x": RNG.standard_normal((b, s)).astype(np.float32), "idx": np.array(idx, np.int64)}
        np.testing.assert_array_equal(np.asarray(cm(*feeds.values())[0]), sess.run(None, feeds)[0])
    assert cm.cache_info().specializations == 0


def test_expand_to_a_shape_chosen_by_where_equal_minus_one():
    """torch's Expand(x, Where(Equal(shape, -1), ones, shape)) over a symbolic shape."""
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Equal", ["s", "minus1"], ["is_neg"]),
             h.make_node("ConstantOfShape", ["three"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))),
             h.make_node("Where", ["is_neg", "ones", "s"], ["shape"]),
             h.make_node("Expand", ["b", "shape"], ["y"])]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["n", "t", 3]),
                       h.make_tensor_value_info("b", T.FLOAT, [1, 1, 3])],
               [_ints("minus1", [-1]), _ints("three", [3])])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(m)
    for n, t in [(1, 2), (2, 7), (5, 3)]:
        feeds = {"x": np.zeros((n, t, 3), np.float32), "b": RNG.standard_normal((1, 1, 3)).astype(np.float32)}
        np.testing.assert_array_equal(np.asarray(cm(*feeds.values())[0]), sess.run(None, feeds)[0])
    assert cm.cache_info().specializations == 0


_SMALL = {
    "gather": ([h.make_node("Gather", ["x", "i"], ["y"], axis=1, name="G")], [_ints("i", [0, 2, -1])],
               "T >= 3  # G: Gather index 2 must be inside axis 1 (T)", 2),
    "reflect_pad": ([h.make_node("Pad", ["x", "p"], ["y"], mode="reflect", name="P")],
                    [_ints("p", [0, 3, 0, 3])], "T >= 4  # P: reflect Pad by 3 needs axis 1 (T) longer", 3),
    "top_k": ([h.make_node("TopK", ["x", "k"], ["y", "i"], axis=1, name="K")], [_ints("k", [3])],
              "T >= 3  # K: TopK k=3 needs at least k elements on axis 1", 2),
}


@pytest.mark.parametrize("name", list(_SMALL))
def test_ops_that_need_a_long_enough_axis_require_it(name):
    nodes, inits, line, too_short = _SMALL[name]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", "T"])], inits)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(m)
    for shape in [(1, 4), (2, 9), (3, 17)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(cm(x)[0]), sess.run(None, {"x": x})[0], rtol=1e-6)
    assert cm.cache_info().specializations == 0
    assert f"  requires {line}\n" in cm.graph.to_text()
    x = np.zeros((1, too_short), np.float32)
    with pytest.raises(Exception):  # onnxruntime refuses it too, at run time
        sess.run(None, {"x": x})
    cond, origin = line.split("  # ")
    with pytest.raises(CallError) as e:
        cm(x)
    assert str(e.value) == (f"model @g: input 'x' axis 1 (T) = {too_short}, but the model "
                            f"requires {cond} ({origin})")
