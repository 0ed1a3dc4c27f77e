"""rewrite-grouped-conv: grouped and depthwise convs rewritten (shifted multiply-adds, one conv
per group, a batched dot) compute what onnxruntime computes, in NCHW and after layout."""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import remarks, run  # noqa: E402
from test_layout import _weight_relayouts, batched, randomized, _light_feeds  # noqa: E402

import tensorsmith  # noqa: E402


def _model(cin, cout, group, k=3, stride=1, pads=(1, 1, 1, 1), dilation=1, hw=(13, 11),
           seed=0) -> onnx.ModelProto:
    """x -> Conv(group, bias) -> Relu, with a symbolic batch."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")]
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=list(pads),
                         group=group, strides=[stride, stride], dilations=[dilation, dilation]),
             h.make_node("Relu", ["c"], ["y"])]
    g = h.make_graph(nodes, "conv", [h.make_tensor_value_info("x", T.FLOAT, ["N", cin, *hw])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _check(cm, m, cin, hw=(13, 11), batches=(1, 3)):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, cin, *hw)).astype(np.float32)
        want = sess.run(None, {"x": x})[0]
        got = cm(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def _grouped_convs(text: str) -> list[str]:
    return [g for g in re.findall(r"feature_group_count=(\d+)", text) if g != "1"]


CASES = {  # id: (cin, cout, group, k, stride, pads, dilation)
    "depthwise-3x3": (8, 8, 8, 3, 1, (1, 1, 1, 1), 1),
    "depthwise-s2-asymmetric-pads": (8, 8, 8, 3, 2, (1, 0, 2, 1), 1),
    "depthwise-dilated-multiplier": (6, 12, 6, 3, 1, (2, 2, 2, 2), 2),
    "depthwise-5x5-s2": (4, 4, 4, 5, 2, (2, 2, 2, 2), 1),
    "grouped-3x3": (8, 12, 4, 3, 1, (1, 1, 1, 1), 1),
    "grouped-1x1": (8, 12, 4, 1, 1, (0, 0, 0, 0), 1),
    "grouped-1x1-s2": (8, 16, 2, 1, 2, (0, 0, 0, 0), 1),
}


@pytest.mark.parametrize("layout", ["", "layout,"], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("grouped", ["split", "dot"])
@pytest.mark.parametrize("case", list(CASES))
def test_rewritten_convs_match_onnxruntime(case, grouped, layout):
    cin, cout, group, k, stride, pads, dilation = CASES[case]
    m = _model(cin, cout, group, k, stride, pads, dilation)
    cm = tensorsmith.compile(m, passes=f"{layout}rewrite-grouped-conv{{grouped={grouped}}}")
    text = cm.ir()
    assert _grouped_convs(text) == [], text
    applied = remarks_of(cm, "applied")
    if cin == group:  # depthwise: no conv at all, k*k taps summed
        assert "= conv(" not in text
        assert text.count("= mul(") == k * k and text.count("= add(") >= k * k - 1
        assert re.search(rf"param @w(/hwio)?/taps: f32\[{k},{k},{cout}\]", text), text
        assert applied == [f"depthwise conv %{_node(cm)} ({group} groups) as shifted multiply-adds"]
    elif grouped == "dot" and k == 1:
        assert "= conv(" not in text and "batch_dims=" in text
        # [g, I/g, O/g] for NHWC; [g, O/g, I/g] (the weight on the left) for NCHW
        g_shape = (group, cin // group, cout // group) if layout else \
            (group, cout // group, cin // group)
        assert re.search(rf"param @w(/hwio)?/groups: f32\[{','.join(map(str, g_shape))}\]", text)
    else:
        assert text.count("= conv(") == group and "= concatenate(" in text
        assert len(re.findall(r"param @w(/hwio)?/g\d+:", text)) == group
    _check(cm, m, cin)


def remarks_of(cm, kind):
    return [r.message for r in cm.history.find("rewrite-grouped-conv").remarks if r.kind == kind]


def _node(cm) -> str:
    rec = cm.history.find("rewrite-grouped-conv")
    return next(r.node for r in rec.remarks).lstrip("%")


def test_keep_leaves_the_convs():
    m = _model(8, 8, 8)
    cm = tensorsmith.compile(m, passes="rewrite-grouped-conv{depthwise=keep}")
    assert _grouped_convs(cm.ir()) == ["8"]
    m = _model(8, 12, 4)
    cm = tensorsmith.compile(m, passes="rewrite-grouped-conv{grouped=keep}")
    assert _grouped_convs(cm.ir()) == ["4"]


def test_plain_conv_is_left_alone():
    m = _model(4, 6, 1)
    plain = tensorsmith.compile(m, passes=[])
    cm = tensorsmith.compile(m, passes="rewrite-grouped-conv")
    assert cm.ir() == plain.ir()


def test_weight_from_an_input_and_a_transposed_conv_are_left_with_reasons():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32)}
    text = """
        graph @main(%x: f32[2,4,6,6], %k: f32[4,1,3,3]) {
          param @w: f32[4,1,3,3]
          %0: f32[2,4,4,4] = conv(%x, %k) {dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=4}
          %1: f32[2,4,11,11] = conv(%x, @w) {dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=4, lhs_dilation=(2, 2), padding=((1, 1), (1, 1))}
          return %0, %1
        }
        """
    before, after, ctx = run(text, "rewrite-grouped-conv", params=params)
    assert str(after) == str(before)
    assert remarks(ctx, "missed") == [
        "[rewrite-grouped-conv] missed: %0: left depthwise conv %0 (4 groups): its weight %k is "
        "not a param",
        "[rewrite-grouped-conv] missed: %1: left depthwise conv %1 (4 groups): lhs_dilation "
        "(a transposed conv)"]


def test_depthwise_in_ir_text():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((2, 2, 1, 3)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,5,5,3]) {
          param @w: f32[2,2,1,3]
          %0: f32[N,2,2,3] = conv(%x, @w) {dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3, window_strides=(2, 2)}
          return %0
        }
        """
    before, after, ctx = run(text, "rewrite-grouped-conv", params=params)
    body = [line.split("#")[0].rstrip() for line in str(after).splitlines() if "= " in line]
    assert body[:4] == [
        "  %1: f32[N,2,2,3] = slice(%x) {limit=(\"N\", 3, 3, 3), start=(0, 0, 0, 0), "
        "strides=(1, 2, 2, 1)}",
        "  %2: f32[1,1,3] = slice(@w/taps) {limit=(1, 1, 3), start=(0, 0, 0)}",
        "  %3: f32[1,1,1,3] = reshape(%2) {shape=(1, 1, 1, 3)}",
        "  %4: f32[N,2,2,3] = mul(%1, %3)"]
    assert len(body) == 4 * 4 + 3 and body[-1].startswith("  %") and "= add(" in body[-1]
    np.testing.assert_array_equal(after.params["w/taps"], params["w"].reshape(2, 2, 3))
    x = np.random.default_rng(1).standard_normal((2, 5, 5, 3)).astype(np.float32)
    from tensorsmith.codegen import executor
    np.testing.assert_allclose(executor(after)(x)[0], executor(before)(x)[0], rtol=1e-5, atol=1e-5)


def test_shufflenet_has_no_grouped_conv_left_and_matches_onnxruntime():
    m = batched(randomized("shufflenet"), 2)
    feeds = _light_feeds(m, 2)
    cm = tensorsmith.compile(m, *feeds.values(), passes="layout,rewrite-grouped-conv")
    text = cm.ir()
    assert _grouped_convs(text) == []
    assert len(remarks_of(cm, "applied")) == 49 - 1  # every conv but the stem
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    got = cm(*feeds.values())
    got = np.asarray(got[0] if isinstance(got, (list, tuple)) else got)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # no weight is re-laid-out inside the program either
    shapes = {tuple(a.shape) for a in cm.graph.params.values() if a.ndim >= 2}
    assert _weight_relayouts(cm.hlo(), shapes) == []


def test_annotated_weight_is_not_sliced():
    from tensorsmith.ir.annotations import Annotation
    from tensorsmith.passes import PassContext, run_pipeline
    source = tensorsmith.compile(_model(8, 8, 8), passes=[]).graph
    source = source.with_annotations([Annotation("w", "mask", {}, np.ones((8, 1, 3, 3), bool))])
    ctx = PassContext()
    out, _ = run_pipeline(source, "rewrite-grouped-conv", ctx)
    assert _grouped_convs(out.to_text()) == ["8"]
    assert remarks(ctx, "missed") == ["[rewrite-grouped-conv] missed: %0: left depthwise conv %0 "
                                      "(8 groups): its weight @w carries mask annotations"]


def test_jax_traced_depthwise_and_grouped_convs_match_jax():
    import jax
    rng = np.random.default_rng(4)
    p = {"dw": rng.standard_normal((3, 3, 1, 6)).astype(np.float32),
         "pw": rng.standard_normal((1, 1, 3, 12)).astype(np.float32)}

    def f(p, x):
        y = jax.lax.conv_general_dilated(x, p["dw"], (2, 2), "SAME", feature_group_count=6,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.nn.relu(y)
        return jax.lax.conv_general_dilated(y, p["pw"], (1, 1), "VALID", feature_group_count=2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x = rng.standard_normal((2, 9, 10, 6)).astype(np.float32)
    cm = tensorsmith.compile(f, x, params=p, passes="layout,rewrite-grouped-conv")
    assert _grouped_convs(cm.ir()) == [] and "= conv(" not in cm.ir()
    assert len(remarks_of(cm, "applied")) == 2
    np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(f(p, x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding,stride", [((2, 2), 3), ((1, 0), 2), ((-1, 2), 1)],
                         ids=["tap-only-in-padding", "asymmetric", "negative-pad-crops"])
def test_depthwise_windows_at_the_edges_match_the_conv(padding, stride):
    from tensorsmith.codegen import executor
    rng = np.random.default_rng(6)
    params = {"w": rng.standard_normal((3, 3, 1, 2)).astype(np.float32)}
    lo, hi = padding
    size = 4
    out = (size + lo + hi - 3) // stride + 1
    text = f"""
        graph @main(%x: f32[N,{size},{size},2]) {{
          param @w: f32[3,3,1,2]
          %0: f32[N,{out},{out},2] = conv(%x, @w) {{dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2, padding=(({lo}, {hi}), ({lo}, {hi})), window_strides=({stride}, {stride})}}
          return %0
        }}
        """
    before, after, ctx = run(text, "rewrite-grouped-conv", params=params)
    assert "= conv(" not in str(after) and str(after).count("= mul(") == 9
    x = rng.standard_normal((2, size, size, 2)).astype(np.float32)
    np.testing.assert_allclose(executor(after)(x)[0], executor(before)(x)[0], rtol=1e-5, atol=1e-5)
