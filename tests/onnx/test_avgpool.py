"""AveragePool: numerics against onnxruntime, and a divisor that is never input-sized."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import tensorsmith

CASES = [  # (input shape, attributes)
    ((2, 3, 9, 9), dict(kernel_shape=[3, 3])),
    ((2, 3, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 3, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                        count_include_pad=1)),
    ((1, 2, 10, 7), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1)),
    ((1, 2, 10, 7), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1,
                         count_include_pad=1)),
    ((1, 2, 8, 8), dict(kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1)),
    ((1, 2, 11, 11), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),
    ((1, 2, 11, 11), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 1, 2, 1],
                          count_include_pad=1)),
    ((1, 4, 12), dict(kernel_shape=[4], strides=[2], pads=[2, 1])),
    ((1, 4, 12), dict(kernel_shape=[4], strides=[2], pads=[2, 1], count_include_pad=1)),
    ((1, 2, 9, 9), dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 2, 4, 6, 6), dict(kernel_shape=[2, 3, 3], strides=[1, 2, 2], pads=[0, 1, 1, 1, 1, 1])),
]


def _model(shape, attrs) -> onnx.ModelProto:
    node = h.make_node("AveragePool", ["x"], ["y"], **attrs)
    g = h.make_graph([node], "avgpool", [h.make_tensor_value_info("x", T.FLOAT, list(shape))],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 19)])


@pytest.mark.parametrize("shape,attrs", CASES, ids=[str(i) for i in range(len(CASES))])
def test_avgpool_matches_onnxruntime(shape, attrs):
    m = _model(shape, attrs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    cm = tensorsmith.compile(m, passes=[])
    got = np.asarray(cm(x)[0])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The divisor is a scalar or an (out spatial) array: nothing input-sized is materialized,
    # and the input is pooled once, without a pad node.
    ops = [n.op for n in cm.graph.nodes]
    assert ops.count("reduce_window") == 1 and "pad" not in ops, ops
    for n in cm.graph.nodes:
        if n.op == "constant":
            assert not n.attrs.get("shape"), cm.ir()
    for arr in cm.graph.params.values():
        assert arr.size <= np.prod(want.shape[2:]), (arr.shape, cm.ir())


def test_avgpool_divisor_is_scalar_without_padding():
    m = _model((1, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2]))
    cm = tensorsmith.compile(m, passes=[])
    assert not cm.graph.params, cm.ir()
    assert "div(" in cm.ir()
