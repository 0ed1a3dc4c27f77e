"""compile(onnx_model, *inputs) specializes shape inputs to their example values, with a guard."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import tensorsmith
from tensorsmith.compiled import SpecializationError
from tensorsmith.frontends.onnx import OnnxImportError


def _reshape_model():
    g = helper.make_graph(
        [helper.make_node("Reshape", ["data", "shape"], ["out"])], "reshape_by_input",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_input_is_specialized_to_the_example_value_and_guarded():
    data = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    shape = np.array([4, 6], np.int64)
    with pytest.raises(OnnxImportError, match="(?s)'shape'.*pass example inputs"):
        tensorsmith.compile(_reshape_model())
    cm = tensorsmith.compile(_reshape_model(), data, shape)
    assert set(cm.specialized) == {"shape"}
    np.testing.assert_array_equal(np.asarray(cm(data, shape)[0]), data.reshape(4, 6))
    with pytest.raises(SpecializationError, match=r"'shape' was specialized to \[4, 6\].*\[6, 4\]"):
        cm(data, np.array([6, 4], np.int64))
