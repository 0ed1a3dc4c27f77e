"""JAX frontend: numerics against the original function, naming, composites, batch, errors."""
from __future__ import annotations

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from zoo import ZOO, call, fresh_inputs, traced  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith import ir  # noqa: E402
from tensorsmith.frontends.jax import UnsupportedPrimitiveError  # noqa: E402

HERE = os.path.basename(__file__)


def assert_close(got, want, rtol=1e-5):
    """Relative closeness, scaled by the output's magnitude (float32 sums reorder)."""
    got_leaves, got_tree = jax.tree_util.tree_flatten(got)
    want_leaves, want_tree = jax.tree_util.tree_flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_numerics_match_jax(name):
    fn, params, args = ZOO[name]()
    cm = tensorsmith.compile(fn, *args, params=params)
    ref = jax.jit(fn)  # the original function (jitted only to keep the test fast)
    for seed in (1, 2):
        fresh = fresh_inputs(args, seed)
        assert_close(cm(*fresh), call(ref, params, *fresh))
    ir.verify(cm.graph)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer_block", "digits"])
def test_batch_dim_is_symbolic_and_runs_for_several_batches(name):
    fn, params, args = ZOO[name]()
    cm = tensorsmith.compile(fn, *args, params=params, batch_dim=True)
    x = cm.graph.inputs[0]
    assert x.type.shape[0] == "N" and x.type.shape[1:] == args[0].shape[1:]
    assert f"%x: f32[N,{','.join(map(str, args[0].shape[1:]))}]" in cm.ir()
    ref = jax.jit(fn)
    for n in (1, 5):
        (xs,) = fresh_inputs((np.zeros((n,) + args[0].shape[1:], np.float32),), seed=n)
        out = cm(xs)
        assert out.shape[0] == n
        assert_close(out, call(ref, params, xs))


def test_batch_dim_custom_symbol_and_bad_value():
    fn, params, args = ZOO["mlp"]()
    g = tensorsmith.trace(fn, *args, params=params, batch_dim="B")
    assert g.inputs[0].type.shape == ("B", 16)
    with pytest.raises(ValueError, match="batch_dim"):
        tensorsmith.trace(fn, *args, params=params, batch_dim="not a symbol")


def test_params_are_named_by_pytree_path():
    g = traced("flax_apply")
    assert list(g.params) == ["params/Dense_0/bias", "params/Dense_0/kernel",
                              "params/Dense_1/bias", "params/Dense_1/kernel"]
    fn, variables, _ = ZOO["flax_apply"]()
    np.testing.assert_array_equal(g.params["params/Dense_0/kernel"],
                                  variables["params"]["Dense_0"]["kernel"])
    text = g.to_text()
    assert "param @params/Dense_1/kernel: f32[24,5]" in text
    assert re.search(r"= dot_general\(%x, @params/Dense_0/kernel\)", text)
    assert set(traced("mlp").params) == {f"{layer}/{k}" for layer in ("layer0", "layer1", "out")
                                         for k in ("w", "b")}


def test_closed_over_arrays_become_params():
    fn, _, args = ZOO["closure"]()
    g = traced("closure")
    # the closure's three numpy arrays (w1, b1, w2), not inputs
    cells = [c.cell_contents for c in fn.__closure__ if isinstance(c.cell_contents, np.ndarray)]
    assert len(g.params) == len(cells) == 3
    assert sorted(a.shape for a in g.params.values()) == sorted(c.shape for c in cells)
    for arr in g.params.values():
        assert any(np.array_equal(arr, c) for c in cells)
    assert [v.name for v in g.inputs] == ["x"]
    assert all(f"@{n}" in g.to_text() for n in g.params)


def test_jax_nn_calls_become_composites():
    text = traced("transformer_block").to_text()
    assert re.search(r'composite\(%\w+\) \{name="jax\.nn\.softmax"\} \{', text)
    assert re.search(r'composite\(%\w+\) \{name="jax\.nn\.gelu"\} \{', text)
    assert "^jax.nn.softmax(" in text and "^jax.nn.gelu(" in text
    mlp = traced("mlp")
    relus = [n for n in mlp.nodes if n.op == "composite" and n.attrs["name"] == "jax.nn.relu"]
    assert len(relus) == 2
    assert [m.op for m in relus[0].body.nodes if m.op != "constant"] == ["max"]
    # the composite is located at the user's call, not inside jax
    assert all(HERE not in n.loc and "zoo.py:" in n.loc for n in relus)


def test_nested_user_jit_becomes_named_composite():
    @jax.jit
    def scaled_tanh(a, s):
        return jnp.tanh(a) * s

    def model(p, x):
        return scaled_tanh(x @ p["w"], p["s"]) + 1.0

    p = {"w": np.eye(3, dtype=np.float32) * 2, "s": np.arange(3, dtype=np.float32)}
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    cm = tensorsmith.compile(model, x, params=p)
    text = cm.ir()
    assert re.search(r'composite\(%\d+, @s\) \{name="scaled_tanh"\} \{', text)
    comp = next(n for n in cm.graph.nodes if n.op == "composite")
    assert {n.op for n in comp.body.nodes} >= {"tanh", "mul"}
    assert_close(cm(x), model(p, x))


def test_nodes_carry_user_source_lines():
    g = traced("cnn")
    conv = [n for n in g.nodes if n.op == "conv"]
    assert len(conv) == 2 and all(re.fullmatch(r"zoo\.py:\d+ \(_cnn_apply\)", n.loc) for n in conv)
    assert next(n for n in conv if n.attrs.get("feature_group_count") == 2)
    assert any(n.op == "reduce_window" and n.attrs["kind"] == "max" for n in g.nodes)


def _line_of(fn, marker: str) -> int:
    import inspect
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


def test_unsupported_primitive_names_primitive_and_source_line():
    # a host callback can never be part of an exported graph, so this stays unsupported
    def host_side(x):
        y = jnp.tanh(x)
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(y.shape, y.dtype), y)  # CALLBACK

    with pytest.raises(UnsupportedPrimitiveError) as info:
        tensorsmith.compile(host_side, np.ones((2, 3), np.float32))
    msg = str(info.value)
    assert "JAX primitive 'pure_callback' is not supported" in msg
    assert f"{HERE}:{_line_of(host_side, '# CALLBACK')} (host_side)" in msg


def test_random_primitive_is_rejected_with_location():
    def noisy(x):
        return x + jax.random.normal(jax.random.key(0), x.shape)  # RANDOM

    with pytest.raises(UnsupportedPrimitiveError) as info:
        tensorsmith.trace(noisy, np.ones((2, 3), np.float32))
    msg = str(info.value)
    assert re.search(r"JAX primitive 'random_\w+' is not supported", msg)
    assert f"{HERE}:{_line_of(noisy, '# RANDOM')} (noisy)" in msg


def test_output_pytree_structure_is_preserved():
    def multi(p, x):
        h = x @ p["w"]
        return {"logits": h, "aux": (jax.nn.relu(h), h.sum()), "same": x}

    p = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 10}
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    cm = tensorsmith.compile(multi, x, params=p)
    got, want = cm(x), multi(p, x)
    assert isinstance(got, dict) and isinstance(got["aux"], tuple)
    assert_close(got, want)
    assert len(cm.graph.outputs) == 4


def test_input_pytrees_are_flattened_with_names():
    def two(p, batch):
        return batch["a"] @ p + batch["b"]

    p = np.ones((3, 2), np.float32)
    batch = {"a": np.ones((4, 3), np.float32), "b": np.full((4, 2), 0.5, np.float32)}
    cm = tensorsmith.compile(two, batch, params=p)
    assert [v.name for v in cm.graph.inputs] == ["batch/a", "batch/b"]
    assert list(cm.graph.params) == ["params"]
    fresh = fresh_inputs((batch,), seed=3)
    assert_close(cm(*fresh), two(p, *fresh))


def test_trace_without_params_and_tuple_args():
    def f(x, y):
        return jnp.maximum(x, y), jnp.concatenate([x, y], axis=0)

    x, y = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    cm = tensorsmith.compile(f, x, y)
    assert [v.name for v in cm.graph.inputs] == ["x", "y"] and not cm.graph.params
    fresh = fresh_inputs((x, y), seed=5)
    assert_close(cm(*fresh), f(*fresh))


def test_float64_and_python_scalar_params_follow_jax_dtype_rules():
    """numpy float64 weights and Python floats compute in float32, as under jax.jit."""
    def affine(p, x):
        return x * p["scale"] + p["shift"]

    p = {"scale": 2.5, "shift": np.linspace(-1, 1, 3)}  # a Python float and a float64 array
    x64 = np.linspace(0, 1, 6).reshape(2, 3)  # float64 input too
    cm = tensorsmith.compile(affine, x64, params=p)
    assert {a.dtype for a in cm.graph.params.values()} == {np.dtype(np.float32)}
    assert cm.graph.inputs[0].type == ir.TensorType((2, 3), "f32")
    assert_close(cm(x64), jax.jit(affine)(p, x64))
