"""The call hot paths (issue 16): numpy arguments of a (shape, dtype) that passed the checks
once go straight to the executable's C++ entry; results and errors are those of the checked
path. CPU executables run on the calling thread (JAX's async dispatch off at import)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import tensorsmith
from tensorsmith import CallError, UsageFailure

executor = importlib.import_module("tensorsmith.codegen.executor")  # the module, not the function
W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 7


def _model():
    """y = tanh(x @ w + b), with x: f32[N,4] and b: f32[3] as a second input."""
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["xw"]), h.make_node("Add", ["xw", "b"], ["s"]),
                      h.make_node("Tanh", ["s"], ["y"])],
                     "affine_tanh", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4]),
                                     h.make_tensor_value_info("b", T.FLOAT, [3])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
                     [numpy_helper.from_array(W, "w")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _want(x, b):
    return np.tanh(np.asarray(x, np.float64) @ W.astype(np.float64) + np.asarray(b, np.float64))


def _args(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)


def test_numpy_hot_path_gives_the_checked_paths_results():
    cm = tensorsmith.compile(_model())
    x, b = _args(5)
    first = np.asarray(cm(x, b)[0])  # a miss: checked, compiled
    assert cm._fast_np, "numpy arguments did not register the hot path"
    for seed in (1, 2):  # hits on the hot path, fresh values each time
        x, b = _args(5, seed)
        got = cm(x, b)[0]
        assert isinstance(got, jax.Array) and got.dtype == np.float32 and got.shape == (5, 3)
        np.testing.assert_allclose(np.asarray(got), _want(x, b), rtol=1e-5, atol=1e-6)
        # the same executable through JAX arrays (the aval hot path) agrees exactly
        np.testing.assert_array_equal(np.asarray(got), np.asarray(cm(jnp.asarray(x), jnp.asarray(b))[0]))
    np.testing.assert_allclose(first, _want(*_args(5)), rtol=1e-5, atol=1e-6)
    info = cm.cache_info()
    assert (info.compiles, info.misses, info.hits) == (1, 1, 4)


def test_strided_and_read_only_numpy_arguments_on_the_hot_path():
    cm = tensorsmith.compile(_model())
    x, b = _args(4)
    cm(x, b)
    wide = np.repeat(x, 2, axis=1)  # x's columns at stride 2
    views = [wide[:, ::2], np.asfortranarray(x), x[::-1][::-1], x.copy()]
    views[-1].setflags(write=False)
    for v in views:
        assert type(v) is np.ndarray and v.shape == x.shape
        np.testing.assert_array_equal(np.asarray(cm(v, b)[0]), np.asarray(cm(x, b)[0]))
    assert cm.cache_info().compiles == 1
    np.testing.assert_array_equal(wide, np.repeat(x, 2, axis=1))  # the user's array is untouched


def test_errors_after_the_hot_path_was_taken():
    cm = tensorsmith.compile(_model())
    x, b = _args(2)
    cm(x, b)
    cm(x, b)  # now on the hot path
    with pytest.raises(CallError, match=r"argument #0 \('x'\) of model @affine_tanh: expected dtype "
                                        r"f32 \(f32\[N,4\]\), got float64"):
        cm(x.astype(np.float64), b)
    with pytest.raises(CallError, match=r"argument #1 \('b'\).*axis 0 must be 3"):
        cm(x, np.ones(5, np.float32))
    with pytest.raises(CallError, match=r"argument #0 \('x'\).*expected rank 2"):
        cm(np.ones(4, np.float32), b)
    with pytest.raises(CallError, match=r"got 1: missing #1 'b'"):
        cm(x)
    np.testing.assert_allclose(np.asarray(cm(x, b)[0]), _want(x, b), rtol=1e-5, atol=1e-6)


def test_casts_and_mixed_arguments_stay_on_the_checked_path():
    cm = tensorsmith.compile(_model(), cast_inputs=True)
    x, b = _args(3)
    x64 = x.astype(np.float64)
    for _ in range(2):
        got = np.asarray(cm(x64, b)[0])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, _want(x, b), rtol=1e-5, atol=1e-6)
    assert not cm._fast_np  # a cast is not something the C++ entry would do
    plain = tensorsmith.compile(_model())
    for args in ((x, jnp.asarray(b)), (jnp.asarray(x), b), (x, b)):
        for _ in range(2):
            np.testing.assert_allclose(np.asarray(plain(*args)[0]), _want(x, b), rtol=1e-5, atol=1e-6)
    assert plain.cache_info().compiles == 1


def test_evicted_entries_leave_the_numpy_hot_path():
    cm = tensorsmith.compile(_model(), cache_size=1)
    a, b = _args(2)
    c, _ = _args(3, 1)
    for x in (a, a, c, c, a):
        np.testing.assert_allclose(np.asarray(cm(x, b)[0]), _want(x, b), rtol=1e-5, atol=1e-6)
    info = cm.cache_info()
    assert (info.compiles, info.evictions, info.size) == (3, 2, 1)
    assert len(cm._fast_np) == 1


def test_a_bad_dispatch_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(executor.DISPATCH_ENV, "threaded")
    with pytest.raises(UsageFailure, match=r"TENSORSMITH_CPU_DISPATCH='threaded': choose sync or async"):
        executor._decide_dispatch()


CHILD = """
import json, jax
PRE
import tensorsmith
from tensorsmith.codegen.executor import setup_cpu_dispatch
mode, why = setup_cpu_dispatch()
x = __import__("numpy").ones((2, 4), "float32")
y = tensorsmith.compile(lambda x: jax.numpy.tanh(x) * 2, x)(x)
print(json.dumps({"mode": mode, "why": why, "async": jax.config.values["jax_cpu_enable_async_dispatch"],
                  "y": float(y.sum())}))
"""


@pytest.mark.parametrize("env, pre, mode, why, is_async", [
    ({}, "", "sync", "default", False),
    ({"TENSORSMITH_CPU_DISPATCH": "async"}, "", "async", "TENSORSMITH_CPU_DISPATCH=async", True),
    ({"JAX_CPU_ENABLE_ASYNC_DISPATCH": "1"}, "", "async", "the user's JAX_CPU_ENABLE_ASYNC_DISPATCH", True),
    ({}, "jax.numpy.ones(1)", "async", "JAX's backends existed before tensorsmith was imported", True),
])
def test_import_turns_cpu_async_dispatch_off_unless_told_not_to(env, pre, mode, why, is_async):
    full = {k: v for k, v in os.environ.items()
            if k not in ("TENSORSMITH_CPU_DISPATCH", "JAX_CPU_ENABLE_ASYNC_DISPATCH")}
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", CHILD.replace("PRE", pre)], env=full,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (got["mode"], got["why"], got["async"]) == (mode, why, is_async)
    assert got["y"] == pytest.approx(16 * np.tanh(1.0), rel=1e-6)  # 8 elements, 2 tanh(1) each


def test_xla_options_records_the_dispatch_mode():
    x, _ = _args(2)
    cm = tensorsmith.compile(lambda x: jnp.tanh(x) * 2, x, passes="xla-options{ynn=off}")
    mode, why = executor.setup_cpu_dispatch()
    assert cm.history.find("xla-options").data["cpu_dispatch"] == {"mode": mode, "why": why}
    # what the record says is what JAX does (this process may have made its backends early)
    assert jax.config.values["jax_cpu_enable_async_dispatch"] == (mode == "async")


def test_loaded_model_calls_the_jitted_export(tmp_path):
    cm = tensorsmith.compile(_model())
    x, b = _args(3)
    path = cm.export(tmp_path / "affine.tsx", x, b)
    lm = tensorsmith.load(path)
    for seed in (0, 1):  # the second call reuses the jitted export and the device params
        x, b = _args(3, seed)
        np.testing.assert_allclose(np.asarray(lm(x, b)[0]), _want(x, b), rtol=1e-5, atol=1e-6)
    assert lm._run is not None and all(isinstance(p, jax.Array) for p in lm._params)
    with pytest.raises(CallError, match=r"got float64"):
        lm(x.astype(np.float64), b)
