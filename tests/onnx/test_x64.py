"""64-bit ONNX models keep their precision without the user enabling JAX's x64 mode."""
import jax
import numpy as np
from onnx import TensorProto, helper

import tensorsmith


def _model():
    g = helper.make_graph(
        [helper.make_node("Mul", ["a", "a"], ["sq"]), helper.make_node("Cast", ["sq"], ["d"], to=TensorProto.DOUBLE),
         helper.make_node("Div", ["d", "b"], ["c"])], "wide",
        [helper.make_tensor_value_info("a", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("b", TensorProto.DOUBLE, [3])],
        [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [3]),
         helper.make_tensor_value_info("sq", TensorProto.INT64, [3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_int64_and_double_are_not_truncated(tmp_path):
    a = np.array([2**31 + 7, -3, 2**20], np.int64)
    b = np.array([3.0, 1e-300, 7.0], np.float64)
    want_sq = a * a
    want_c = want_sq.astype(np.float64) / b
    cm = tensorsmith.compile(_model())
    c, sq = (np.asarray(o) for o in cm(a, b))
    assert sq.dtype == np.int64 and c.dtype == np.float64
    np.testing.assert_array_equal(sq, want_sq)
    np.testing.assert_allclose(c, want_c, rtol=1e-15)
    assert not jax.config.jax_enable_x64  # the user's JAX setting is left alone
    cm.export(tmp_path / "wide.tsx")
    c2, sq2 = (np.asarray(o) for o in tensorsmith.load(tmp_path / "wide.tsx")(a, b))
    np.testing.assert_array_equal(sq2, want_sq)
    np.testing.assert_allclose(c2, want_c, rtol=1e-15)
