"""layout{grouped=keep}: grouped and depthwise convs stay channels-first for rewrite-grouped-conv
while plain convs go NHWC; numerics against onnxruntime and the unrewritten model."""
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
from test_layout import _light_feeds, batched, randomized  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.passes import PassOptionError  # noqa: E402

PIPE = "layout{grouped=keep},rewrite-grouped-conv"


def shuffle_unit(c: int = 8, g: int = 4, hw=(9, 7), seed: int = 0) -> onnx.ModelProto:
    """A ShuffleNet unit behind a plain stem conv: conv -> relu -> grouped 1x1 -> relu ->
    channel shuffle (reshape, transpose, reshape) -> depthwise 3x3 -> grouped 1x1 -> + stem."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)
    mid = 2 * c
    inits = [w("w0", c, 3, 3, 3), w("w1", mid, c // g, 1, 1), w("wd", mid, 1, 3, 3),
             w("w2", c, mid // g, 1, 1),
             numpy_helper.from_array(rng.standard_normal(mid).astype(np.float32), "b1"),
             numpy_helper.from_array(np.array([0, g, mid // g, hw[0], hw[1]], np.int64), "s5"),
             numpy_helper.from_array(np.array([0, mid, hw[0], hw[1]], np.int64), "s4")]
    nodes = [h.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c0"], ["r0"]),
             h.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[1, 1], group=g),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Reshape", ["r1", "s5"], ["t5"]),
             h.make_node("Transpose", ["t5"], ["p5"], perm=[0, 2, 1, 3, 4]),
             h.make_node("Reshape", ["p5", "s4"], ["sh"]),
             h.make_node("Conv", ["sh", "wd"], ["dw"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         group=mid),
             h.make_node("Conv", ["dw", "w2"], ["c2"], kernel_shape=[1, 1], group=g),
             h.make_node("Add", ["c2", "r0"], ["y"])]
    graph = h.make_graph(nodes, "shuffle_unit",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, *hw])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _run(cm, x):
    got = cm(x)
    return np.asarray(got[0] if isinstance(got, (list, tuple)) else got)


def test_grouped_convs_stay_channels_first_and_match_onnxruntime():
    m = shuffle_unit()
    cm = tensorsmith.compile(m, passes=PIPE)
    text = cm.ir()
    # the stem conv went NHWC; no grouped conv is left (rewritten from NCHW, not NHWC)
    convs = re.findall(r"= conv\([^)]*\) \{dimension_numbers=\(([^)]*)\)", text)
    assert convs == ['"NHWC", "HWIO", "NHWC"'], text
    assert "feature_group_count=4" not in text and "feature_group_count=16" not in text
    # channels-first batched dots: weight [g, O/g, I/g] on the left, no /hwio relayout of it
    assert re.search(r"param @w1/groups: f32\[4,4,2\]", text), text
    assert re.search(r"param @w2/groups: f32\[4,2,4\]", text), text
    assert re.search(r"param @wd/taps: f32\[3,3,16\]", text), text
    missed = [r.message for r in cm.history.find("layout").remarks if r.kind == "missed"]
    assert len(missed) == 3 and all(x.endswith("grouped=keep") for x in missed), missed
    assert all(re.match(r"left grouped conv %\w+ in NCHW", x) for x in missed), missed
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = tensorsmith.compile(m, passes="none")
    for batch in (1, 3):
        x = np.random.default_rng(10 + batch).standard_normal((batch, 3, 9, 7)).astype(np.float32)
        got = _run(cm, x)
        np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, _run(plain, x), rtol=1e-4, atol=1e-4)


def test_keep_and_convert_compute_the_same():
    m = shuffle_unit(c=12, g=3, hw=(6, 10), seed=3)
    keep = tensorsmith.compile(m, passes=PIPE)
    convert = tensorsmith.compile(m, passes="layout,rewrite-grouped-conv")
    assert "grouped=keep" not in "\n".join(str(r) for r in convert.history.find("layout").remarks)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 10)).astype(np.float32)
    np.testing.assert_allclose(_run(keep, x), _run(convert, x), rtol=1e-4, atol=1e-4)


def test_keep_without_grouped_convs_is_plain_layout():
    m = shuffle_unit()
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "Relu")][:2]
    g = h.make_graph(nodes, "stem", list(m.graph.input),
                     [h.make_tensor_value_info("r0", T.FLOAT, None)],
                     [i for i in m.graph.initializer if i.name == "w0"])
    stem = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    stem.ir_version = 8
    assert tensorsmith.compile(stem, passes="layout{grouped=keep}").ir() == \
        tensorsmith.compile(stem, passes="layout").ir()


def test_grouped_option_is_checked():
    with pytest.raises(PassOptionError, match=r"option 'grouped': 'kept' is not one of"):
        tensorsmith.compile(shuffle_unit(), passes="layout{grouped=kept}")


@pytest.mark.slow
def test_light_shufflenet_with_grouped_kept_matches_onnxruntime():
    m = batched(randomized("shufflenet"), "N")
    cm = tensorsmith.compile(m, passes="fold-batchnorm,layout{grouped=keep},rewrite-grouped-conv,"
                                       "rewrite-pool,fuse,dce")
    feeds = _light_feeds(m, 2)
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = _run(cm, *feeds.values())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert "feature_group_count" not in re.sub(r"feature_group_count=1\b", "", cm.ir())


def test_keep_is_for_the_cpu_target_only():
    from tensorsmith.frontends.onnx import import_onnx
    from tensorsmith.passes import PassContext, run_pipeline
    graph = import_onnx(shuffle_unit())
    ctx = PassContext(target="gpu")
    out, _ = run_pipeline(graph, "layout{grouped=keep}", ctx)
    text = out.to_text()
    assert "feature_group_count=4" in text
    assert len(re.findall(r'dimension_numbers=\("NHWC"', text)) == 4, text
    assert any("grouped=keep applies to the cpu target; converting grouped convs for gpu"
               in str(r) for r in ctx.remarks), ctx.remarks
