"""Compile once, run at any shape: each model is compiled ONCE without example inputs and
called at three or more shapes, against onnxruntime (or the JAX function itself)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import tensorsmith
from tensorsmith.compiled import RecompileWarning

RNG = np.random.default_rng(0)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, outputs, inits=(), opset=17, name="m"):
    g = h.make_graph(nodes, name, inputs, outputs, list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _run_both(model, cm, inputs: dict, rtol=1e-4, atol=1e-5):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, inputs)
    got = cm(*inputs.values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# --- models ---------------------------------------------------------------------------------
def shape_chain_model():
    """x: f32[N,C,H,W] -> Reshape(x, Concat(Shape(x)[0], [-1])) -> f32[N, C*H*W] @ nothing."""
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        h.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        h.make_node("Reshape", ["x", "target"], ["flat"]),
        h.make_node("ReduceSum", ["flat", "axes1"], ["total"], keepdims=1),
        h.make_node("Mul", ["flat", "total"], ["y"]),
    ]
    inits = [_init("zero", np.array(0, np.int64)), _init("axes0", np.array([0], np.int64)),
             _init("minus1", np.array([-1], np.int64)), _init("axes1", np.array([1], np.int64))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", "C", "H", "W"])],
                  [h.make_tensor_value_info("y", T.FLOAT, None)], inits)


def resize_sizes_model():
    nodes = [h.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, "H", "W"]),
                          h.make_tensor_value_info("sizes", T.INT64, [4])],
                  [h.make_tensor_value_info("y", T.FLOAT, None)], opset=19)


def if_model():
    """cond ? x * 2 (f32[N,4]) : ReduceSum(x, axis 1) (f32[N,1]) -- different shapes."""
    then_g = h.make_graph([h.make_node("Mul", ["x", "two"], ["t_out"])], "then", [],
                          [h.make_tensor_value_info("t_out", T.FLOAT, None)])
    else_g = h.make_graph([h.make_node("ReduceSum", ["x", "axes1"], ["e_out"], keepdims=1)],
                          "else", [], [h.make_tensor_value_info("e_out", T.FLOAT, None)])
    nodes = [h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    inits = [_init("two", np.array(2.0, np.float32)), _init("axes1", np.array([1], np.int64))]
    return _model(nodes, [h.make_tensor_value_info("cond", T.BOOL, []),
                          h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                  [h.make_tensor_value_info("y", T.FLOAT, None)], inits)


def mlp_model():
    nodes = [h.make_node("MatMul", ["x", "w1"], ["a"]), h.make_node("Add", ["a", "b1"], ["b"]),
             h.make_node("Relu", ["b"], ["c"]), h.make_node("MatMul", ["c", "w2"], ["y"])]
    inits = [_init("w1", _f32(16, 32)), _init("b1", _f32(32)), _init("w2", _f32(32, 4))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
                  [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], inits)


def cnn_model():
    """[N,3,H,W]: strided padded Conv, MaxPool, Resize by scales, residual Add, GAP."""
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1],
                    kernel_shape=[3, 3]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Resize", ["p1", "", "scales"], ["up"], mode="nearest"),
        h.make_node("Conv", ["up", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        h.make_node("Add", ["c2", "up"], ["res"]),
        h.make_node("GlobalAveragePool", ["res"], ["y"]),
    ]
    inits = [_init("w1", _f32(8, 3, 3, 3) * 0.3), _init("b1", _f32(8)),
             _init("scales", np.array([1, 1, 2, 2], np.float32)), _init("w2", _f32(8, 8, 3, 3) * 0.2)]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])],
                  [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 1, 1])], inits)


# --- tests ----------------------------------------------------------------------------------
def test_shape_gather_concat_reshape_chain_at_three_shapes():
    m = shape_chain_model()
    cm = tensorsmith.compile(m)
    for shape in [(1, 2, 3, 4), (3, 2, 5, 5), (2, 4, 1, 7)]:
        _run_both(m, cm, {"x": _f32(*shape)})
    info = cm.cache_info()
    assert info.compiles == 3 and info.misses == 3
    assert cm.specialized == {}  # shapes decided it; no data value was baked in
    _run_both(m, cm, {"x": _f32(3, 2, 5, 5)})
    assert cm.cache_info().hits == 1 and cm.cache_info().compiles == 3


def test_resize_by_sizes_input_at_three_shapes():
    m = resize_sizes_model()
    cm = tensorsmith.compile(m)
    for n, hw, out in [(1, (4, 4), (8, 8)), (2, (5, 3), (7, 9)), (1, (4, 4), (6, 6))]:
        _run_both(m, cm, {"x": _f32(n, 2, *hw), "sizes": np.array([n, 2, *out], np.int64)})
    info = cm.cache_info()
    assert info.compiles == 3 and info.specializations == 3
    assert any("sizes: int64[4]=[1, 2, 6, 6]" in s for s in info.signatures), info.signatures


def test_if_with_branches_of_different_shapes():
    m = if_model()
    cm = tensorsmith.compile(m)
    for cond, n in [(True, 2), (False, 2), (True, 5), (False, 3)]:
        _run_both(m, cm, {"cond": np.array(cond), "x": _f32(n, 4)})
    assert cm.cache_info().compiles == 4


def test_dynamic_batch_mlp_is_symbolic_one_pipeline_run():
    m = mlp_model()
    cm = tensorsmith.compile(m, passes="default")
    assert cm.symbolic and "f32[N,16]" in cm.ir()
    for n in (1, 7, 32):
        _run_both(m, cm, {"x": _f32(n, 16)})
    info = cm.cache_info()
    assert (info.compiles, info.specializations, info.pipeline_runs) == (3, 0, 1)


def test_cnn_n3hw_at_three_shapes():
    m = cnn_model()
    cm = tensorsmith.compile(m)
    for shape in [(1, 3, 16, 16), (2, 3, 24, 20), (1, 3, 33, 17)]:
        _run_both(m, cm, {"x": _f32(*shape)})
    assert cm.cache_info().compiles == 3


def test_params_are_shared_between_cache_entries():
    m = cnn_model()
    cm = tensorsmith.compile(m)
    cm(_f32(1, 3, 16, 16))
    cm(_f32(1, 3, 20, 20))
    a, b = list(cm._cache.values())
    shared = [p for p in a.params if any(p is q for q in b.params)]
    assert len(shared) >= 3  # both conv weights and the bias: one device copy


def test_cache_bound_eviction_and_info():
    m = mlp_model()
    cm = tensorsmith.compile(m, cache_size=2)
    for n in (1, 2, 3, 1):
        cm(_f32(n, 16))
    info = cm.cache_info()
    # 1, 2 cached; 3 evicts 1; 1 again is a miss that evicts 2
    assert (info.hits, info.misses, info.compiles, info.evictions, info.size, info.maxsize) == \
        (0, 4, 4, 2, 2, 2)
    assert info.signatures == ["x: float32[3, 16]", "x: float32[1, 16]"]
    cm(_f32(1, 16))
    assert cm.cache_info().hits == 1


def test_recompile_warning_names_the_changing_dim_once():
    m = mlp_model()
    cm = tensorsmith.compile(m, recompile_warning=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, 7):
            cm(_f32(n, 16))
    got = [w for w in caught if issubclass(w.category, RecompileWarning)]
    assert len(got) == 1
    msg = str(got[0].message)
    assert "compiled 4 times" in msg and "input 'x' (#0) axis 0: sizes 1, 2, 3, 4" in msg
    assert "Bucket or pad" in msg and "axis 1" not in msg


def test_compile_with_example_inputs_warms_the_cache():
    m = mlp_model()
    x = _f32(5, 16)
    cm = tensorsmith.compile(m, x)
    assert cm.cache_info().compiles == 1
    _run_both(m, cm, {"x": x})
    assert cm.cache_info().hits == 1


def test_jax_cnn_with_symbolic_h_w_compiled_once():
    w1 = _f32(3, 3, 3, 8) * 0.3
    w2 = _f32(3, 3, 8, 4) * 0.2

    def cnn(p, x):
        dn = ("NHWC", "HWIO", "NHWC")
        y = jax.lax.conv_general_dilated(x, p["w1"], (2, 2), "SAME", dimension_numbers=dn)
        y = jax.nn.relu(y)
        y = jax.lax.conv_general_dilated(y, p["w2"], (1, 1), "SAME", dimension_numbers=dn)
        return jnp.mean(y, axis=(1, 2))

    params = {"w1": w1, "w2": w2}
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("N, H, W, 3"), np.float32)
    cm = tensorsmith.compile(cnn, spec, params=params)
    for shape in [(1, 8, 8, 3), (2, 13, 9, 3), (3, 16, 20, 3)]:
        x = _f32(*shape)
        np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(jax.jit(cnn)(params, x)),
                                   rtol=1e-4, atol=1e-5)
    assert cm.cache_info().compiles == 3
    with pytest.raises(tensorsmith.CallError, match=r"axis 3 must be 3"):
        cm(_f32(1, 8, 8, 4))


def test_jax_mlp_with_symbolic_batch_is_one_graph():
    w = _f32(16, 8)

    def mlp(p, x):
        return jnp.tanh(x @ p)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("B, 16"), np.float32)
    cm = tensorsmith.compile(mlp, spec, params=w)
    assert cm.symbolic and "f32[B,16]" in cm.ir()
    for n in (1, 5, 9):
        x = _f32(n, 16)
        np.testing.assert_allclose(np.asarray(cm(x)), np.tanh(x @ w), rtol=1e-5, atol=1e-6)
    info = cm.cache_info()
    assert (info.compiles, info.specializations, info.pipeline_runs) == (3, 0, 1)


def test_jax_symbolic_export_keeps_the_batch_open(tmp_path):
    w = _f32(16, 8)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("B, 16"), np.float32)
    cm = tensorsmith.compile(lambda p, x: jnp.tanh(x @ p), spec, params=w)
    loaded = tensorsmith.load(cm.export(tmp_path / "mlp.tsx"))
    assert loaded.meta["inputs"] == ["f32[B,16]"]
    for n in (2, 7):
        x = _f32(n, 16)
        np.testing.assert_allclose(np.asarray(loaded(x)), np.tanh(x @ w), rtol=1e-5, atol=1e-6)


def test_export_of_value_dependent_model_names_the_inputs(tmp_path):
    m = resize_sizes_model()
    cm = tensorsmith.compile(m)
    with pytest.raises(tensorsmith.ExportError, match=r"(?s)'sizes'.*cm\.export\(path, \*example_inputs\)"):
        cm.export(tmp_path / "m.tsx")
    x, sizes = _f32(1, 2, 4, 4), np.array([1, 2, 8, 8], np.int64)
    path = cm.export(tmp_path / "m.tsx", x, sizes)
    loaded = tensorsmith.load(path)
    np.testing.assert_allclose(np.asarray(loaded(x, sizes)[0]), np.asarray(cm(x, sizes)[0]),
                               rtol=1e-6)


def test_export_keeps_symbolic_batch_open(tmp_path):
    m = mlp_model()
    cm = tensorsmith.compile(m)
    loaded = tensorsmith.load(cm.export(tmp_path / "mlp.tsx"))
    for n in (1, 4):
        x = _f32(n, 16)
        np.testing.assert_allclose(np.asarray(loaded(x)[0]), np.asarray(cm(x)[0]), rtol=1e-5)


def test_unsupported_model_with_static_inputs_fails_at_compile():
    nodes = [h.make_node("Reshape", ["x", "shape"], ["y"])]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
               [h.make_tensor_value_info("y", T.FLOAT, None)],
               [_init("shape", np.array([5, 5], np.int64))])
    with pytest.raises(tensorsmith.ModelImportError):
        tensorsmith.compile(m)
    assert onnx  # the onnx module is used to build every model here


def test_export_only_target_needs_example_inputs_for_a_value_dependent_model(tmp_path):
    m = resize_sizes_model()
    with pytest.raises(tensorsmith.ExportError, match=r"(?s)cannot be lowered for tpu without "
                                                      r"example inputs.*'sizes'"):
        tensorsmith.compile(m, target="tpu")
    x, sizes = _f32(1, 2, 4, 4), np.array([1, 2, 8, 8], np.int64)
    cm = tensorsmith.compile(m, x, sizes, target="tpu")
    assert not cm.runnable and "f32[1,2,8,8]" in cm.ir()
    assert cm.export(tmp_path / "m.tsx").is_file()


def test_converter_failing_on_symbolic_dims_specializes_instead():
    """InstanceNormalization over symbolic H, W: the symbolic import fails; calls specialize."""
    g = h.make_graph([h.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])], "inorm",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [_init("s", _f32(3)), _init("b", _f32(3))])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    cm = tensorsmith.compile(m)
    for shape in [(1, 3, 4, 4), (2, 3, 5, 7), (1, 3, 8, 3)]:
        _run_both(m, cm, {"x": _f32(*shape)})
    assert cm.cache_info().specializations in (0, 3)  # 0 once the frontend keeps it symbolic
