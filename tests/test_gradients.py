"""Gradients through a compiled graph (``cm.apply``) equal jax.grad of the source function."""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tensorsmith
from tensorsmith.errors import UsageFailure
from tensorsmith.frontends.jax import _path_name

sys.path.insert(0, str(Path(__file__).parent))
from zoo import ZOO, call  # noqa: E402


def _named(params) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_path_name(p) or "params": np.asarray(x) for p, x in leaves}


def _loss_weights(out, seed=7):
    r = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda o: r.standard_normal(np.shape(o)).astype(np.float32), out)


def _weighted(out, w):
    return sum(jnp.sum(o * c) for o, c in zip(jax.tree_util.tree_leaves(out),
                                             jax.tree_util.tree_leaves(w)))


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("passes", ["none", None], ids=["no-passes", "default-pipeline"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_gradients_match_jax(name, passes):
    fn, params, args = ZOO[name]()
    cm = tensorsmith.compile(fn, *args, params=params, passes=passes)
    w = _loss_weights(call(fn, params, *args))

    # input gradients
    g_src = jax.grad(lambda *a: _weighted(call(fn, params, *a), w), argnums=tuple(range(len(args))))(*args)
    g_cm = jax.grad(lambda *a: _weighted(cm.apply({}, *a), w), argnums=tuple(range(len(args))))(*args)
    for i, (a, b) in enumerate(zip(g_cm, g_src)):
        _close(a, b, f"{name}: d loss / d input {i}")

    if params is None:
        return
    # param gradients, for every source param the pipeline kept as it was
    src = _named(params)
    g_src_p = _named(jax.grad(lambda p: _weighted(fn(p, *args), w))(params))
    kept = {k: v for k, v in cm.params.items() if k in src and v.shape == src[k].shape
            and np.array_equal(v, src[k])}
    if passes == "none":
        assert set(kept) == set(src)
    assert kept, f"{name}: no param survived the pipeline unchanged"
    g_cm_p = jax.grad(lambda p: _weighted(cm.apply(p, *args), w))(
        {k: jnp.asarray(v) for k, v in kept.items()})
    for k in kept:
        _close(g_cm_p[k], g_src_p[k], f"{name}: d loss / d {k}")


@pytest.mark.parametrize("passes", ["none", None], ids=["no-passes", "default-pipeline"])
def test_relu_gradient_at_zero_is_zero(passes):
    def f(x, y):
        return jax.nn.relu(x) * 3.0 + jax.nn.relu(y @ jnp.ones((3, 3), jnp.float32))
    x = np.array([[0.0, -0.0, 1.0], [-1.0, 0.0, 2.0]], np.float32)
    y = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)  # rows summing to exactly 0
    cm = tensorsmith.compile(f, x, y, passes=passes)
    g_cm = jax.grad(lambda x, y: cm.apply({}, x, y).sum(), argnums=(0, 1))(x, y)
    g_src = jax.grad(lambda x, y: f(x, y).sum(), argnums=(0, 1))(x, y)
    for a, b in zip(g_cm, g_src):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(g_cm[0])[0, 0] == 0.0  # not max's 0.5


def test_relu_op_gradient_at_zero():
    g = tensorsmith.ir.parse("graph @r(%x: f32[3]) {\n  %0: f32[3] = relu(%x)\n  return %0\n}")
    cm = tensorsmith.compile(g, passes="none")
    x = np.array([0.0, 1.0, -1.0], np.float32)
    np.testing.assert_array_equal(jax.grad(lambda x: cm.apply({}, x)[0].sum())(x), [0.0, 1.0, 0.0])


@pytest.mark.parametrize("passes", ["none", None], ids=["no-passes", "default-pipeline"])
def test_stop_gradient_and_custom_rules_are_kept(passes):
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)
    f.defjvp(lambda p, t: (f(p[0]), 2.0 * t[0]))  # deliberately not cos: the rule must win

    @jax.custom_vjp
    def g(x):
        return x * 3.0
    g.defvjp(lambda x: (g(x), x), lambda res, ct: (ct * 5.0,))

    def h(x):
        return (f(x) + g(x) + x * jax.lax.stop_gradient(x)
                + jax.nn.logsumexp(x) + jax.nn.softplus(x))

    x = np.array([0.0, 1.5, -2.0], np.float32)
    cm = tensorsmith.compile(h, x, passes=passes)
    assert "stop_gradient(%x)" in cm.ir()
    assert '{name="f"}' in cm.ir() and '{name="g"}' in cm.ir()
    got = jax.grad(lambda x: cm.apply({}, x).sum())(x)
    want = jax.grad(lambda x: h(x).sum())(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cm(x), h(x), rtol=1e-6, atol=1e-6)


def test_custom_rule_falls_back_to_body_without_the_trace():
    """The rule is kept only while the traced body lives; a graph read back later lowers its
    body with the derivative JAX gives its ops."""
    import gc

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)
    f.defjvp(lambda p, t: (f(p[0]), 2.0 * t[0]))
    x = np.array([0.5, 1.0], np.float32)
    g = tensorsmith.trace(f, x)
    text = g.to_text()
    same = tensorsmith.compile(tensorsmith.ir.parse(text), passes="none")
    np.testing.assert_allclose(jax.grad(lambda x: same.apply({}, x)[0].sum())(x), [2.0, 2.0])
    del g
    gc.collect()
    later = tensorsmith.compile(tensorsmith.ir.parse(text), passes="none")
    np.testing.assert_allclose(jax.grad(lambda x: later.apply({}, x)[0].sum())(x), np.cos(x),
                               rtol=1e-6)


def test_apply_names_an_unknown_param():
    fn, params, args = ZOO["mlp"]()
    cm = tensorsmith.compile(fn, *args, params=params)
    with pytest.raises(UsageFailure, match=r"no param 'layer0/ww'.*closest: 'layer0/w'"):
        cm.apply({"layer0/ww": np.zeros((16, 32), np.float32)}, *args)


def test_with_params_leaves_the_original_alone():
    fn, params, args = ZOO["mlp"]()
    cm = tensorsmith.compile(fn, *args, params=params)
    before = np.asarray(cm(*args))
    new = cm.with_params({"out/b": np.ones(10, np.float32)})
    np.testing.assert_array_equal(np.asarray(cm(*args)), before)
    np.testing.assert_allclose(np.asarray(new(*args)), before - cm.params["out/b"] + 1.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageFailure, match="shape"):
        cm.with_params({"out/b": np.ones(3, np.float32)})
