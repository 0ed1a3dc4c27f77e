"""Call-time argument checks (issue 15): count, rank, dtype and static dims give CallError
naming the argument; casts happen only with cast_inputs=True and only when safe in kind."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import tensorsmith
from tensorsmith import CallError


def _model():
    """y = x @ w + b, with x: f32[N,4] and b: f32[3] as a second input."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["xw"]), h.make_node("Add", ["xw", "b"], ["y"])],
                     "affine", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4]),
                                h.make_tensor_value_info("b", T.FLOAT, [3])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])], [w])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def cm():
    return tensorsmith.compile(_model())


def _ok_args(n=2):
    return np.ones((n, 4), np.float32), np.ones(3, np.float32)


def _want(x, b):
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return np.asarray(x, np.float64) @ w + b


def test_no_arguments(cm):
    with pytest.raises(CallError, match=r"model @affine takes 2 arguments \(#0 'x': f32\[N,4\], "
                                        r"#1 'b': f32\[3\]\); got 0: missing #0 'x' \(f32\[N,4\]\), "
                                        r"#1 'b' \(f32\[3\]\)"):
        cm()


def test_too_few_and_too_many(cm):
    x, b = _ok_args()
    with pytest.raises(CallError, match=r"got 1: missing #1 'b' \(f32\[3\]\)$"):
        cm(x)
    with pytest.raises(CallError, match=r"takes 2 arguments .* got 3: 1 too many"):
        cm(x, b, b)


def test_wrong_rank(cm):
    _, b = _ok_args()
    with pytest.raises(CallError, match=r"argument #0 \('x'\) of model @affine: expected rank 2 "
                                        r"\(f32\[N,4\]\), got shape \(4,\) \(rank 1\)"):
        cm(np.ones(4, np.float32), b)


def test_static_dim_conflict(cm):
    x, _ = _ok_args()
    with pytest.raises(CallError, match=r"argument #1 \('b'\) of model @affine: expected f32\[3\], "
                                        r"got shape \(5,\): axis 0 must be 3"):
        cm(x, np.ones(5, np.float32))
    with pytest.raises(CallError, match=r"argument #0 \('x'\).*axis 1 must be 4"):
        cm(np.ones((2, 5), np.float32), np.ones(3, np.float32))


@pytest.mark.parametrize("dtype, unsafe", [(np.float64, False), (np.int32, False),
                                           (np.bool_, False), (np.complex64, True)])
def test_wrong_dtype_is_refused(cm, dtype, unsafe):
    x, b = _ok_args()
    name = np.dtype(dtype).name
    pattern = (rf"argument #0 \('x'\) of model @affine: expected dtype f32 \(f32\[N,4\]\), "
               rf"got {name}")
    if unsafe:
        pattern += rf" \({name} -> float32 is not a safe cast, so it is never done implicitly\)"
    else:
        pattern += r"; pass it as f32 \(e\.g\. x\.astype\(numpy\.float32\)\), or compile with cast_inputs=True"
    with pytest.raises(CallError, match=pattern):
        cm(x.astype(dtype), b)


def test_cast_inputs_casts_safe_kinds_only():
    cm = tensorsmith.compile(_model(), cast_inputs=True)
    x = np.arange(8, dtype=np.float64).reshape(2, 4) / 3
    b = np.array([1, 2, 3], np.int64)
    got = np.asarray(cm(x, b)[0])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _want(x, b), rtol=1e-6)
    with pytest.raises(CallError, match=r"got complex64 \(complex64 -> float32 is not a safe cast"):
        cm(x.astype(np.complex64), b)


def test_python_scalars_and_lists_follow_the_input_dtype():
    cm = tensorsmith.compile(_model())
    x = np.ones((1, 4), np.float32)
    got = np.asarray(cm(x, [1, 2, 3])[0])
    np.testing.assert_allclose(got, _want(x, np.array([1, 2, 3])), rtol=1e-6)
    with pytest.raises(CallError, match=r"argument #1 \('b'\).*expected rank 1"):
        cm(x, 2.0)


def test_checks_run_again_after_a_hit(cm):
    x, b = _ok_args(3)
    np.testing.assert_allclose(np.asarray(cm(x, b)[0]), _want(x, b), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cm(jnp.asarray(x), jnp.asarray(b))[0]), _want(x, b),
                               rtol=1e-6)
    with pytest.raises(CallError, match="got float64"):
        cm(x.astype(np.float64), b)


def test_symbol_bound_twice_must_agree():
    g = h.make_graph([h.make_node("Add", ["a", "b"], ["y"])], "pair",
                     [h.make_tensor_value_info("a", T.FLOAT, ["N", 2]),
                      h.make_tensor_value_info("b", T.FLOAT, ["N", 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])])
    cm = tensorsmith.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    with pytest.raises(CallError, match=r"argument #1 \('b'\) of model @pair: axis 0 is N "
                                        r"\(f32\[N,2\]\), which argument #0 \('a'\) binds to 3; "
                                        r"got shape \(4, 2\)"):
        cm(np.ones((3, 2), np.float32), np.ones((4, 2), np.float32))


def test_jax_model_checks_count_and_complex():
    def f(x, y):
        return x * 2 + y

    x = np.ones((2, 3), np.float32)
    cm = tensorsmith.compile(f, x, x)
    np.testing.assert_allclose(np.asarray(cm(x, x)), 3 * x)
    with pytest.raises(CallError, match=r"takes 2 arguments"):
        cm(x)
    with pytest.raises(CallError, match=r"argument #1 \('y'\).*got complex64"):
        cm(x, x.astype(np.complex64))


def test_loaded_model_checks_arguments(tmp_path, cm):
    loaded = tensorsmith.load(cm.export(tmp_path / "affine.tsx"))
    x, b = _ok_args()
    np.testing.assert_allclose(np.asarray(loaded(x, b)[0]), _want(x, b), rtol=1e-6)
    with pytest.raises(CallError, match=r"takes 2 arguments .* got 1: missing #1 'b'"):
        loaded(x)
    with pytest.raises(CallError, match=r"argument #0 \('x'\) of .*affine\.tsx.*got float64"):
        loaded(x.astype(np.float64), b)
