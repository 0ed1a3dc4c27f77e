"""A model whose shapes come from an input's value compiles without example inputs and
specializes per value at call time (no SpecializationError on an ordinary call)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import tensorsmith
from tensorsmith.compiled import NotSpecializedError


def _reshape_model():
    g = helper.make_graph(
        [helper.make_node("Reshape", ["data", "shape"], ["out"])], "reshape_by_input",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_input_specializes_per_value_without_example_inputs():
    data = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    cm = tensorsmith.compile(_reshape_model())
    assert not cm.symbolic
    with pytest.raises(NotSpecializedError, match="(?s)'shape'.*Call it once"):
        cm.ir()
    for shape in ([4, 6], [6, 4], [24, 1], [4, 6]):
        got = np.asarray(cm(data, np.array(shape, np.int64))[0])
        np.testing.assert_array_equal(got, data.reshape(shape))
    info = cm.cache_info()
    assert (info.compiles, info.specializations, info.hits, info.size) == (3, 3, 1, 3)
    assert set(cm.specialized) == {"shape"}
    assert "f32[4,6]" in cm.ir()  # the first specialization's graph


def test_example_inputs_specialize_early_and_warm_the_cache():
    data = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    shape = np.array([4, 6], np.int64)
    cm = tensorsmith.compile(_reshape_model(), data, shape)
    assert set(cm.specialized) == {"shape"}
    assert cm.cache_info().compiles == 1
    np.testing.assert_array_equal(np.asarray(cm(data, shape)[0]), data.reshape(4, 6))
    assert cm.cache_info().hits == 1
    np.testing.assert_array_equal(np.asarray(cm(data, np.array([6, 4]))[0]), data.reshape(6, 4))
