"""A zoo of small JAX test models: each factory returns ``(fn, params_or_None, example_args)``.

With params the model is called ``fn(params, *args)``; without (``closure``) ``fn(*args)``.
Weights come from fixed numpy seeds and are float32, so every run sees the same model.
Import by path from anywhere: ``sys.path.insert(0, "<repo>/tests"); from zoo import ZOO``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ZOO", "call", "fresh_inputs", "traced"]

BN_EPS = 1e-5


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _w(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    """Glorot-ish float32 weights."""
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return (rng.standard_normal(shape) * s).astype(np.float32)


def _x(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- mlp
def _mlp_apply(params, x):
    h = jax.nn.relu(x @ params["layer0"]["w"] + params["layer0"]["b"])
    h = jax.nn.relu(h @ params["layer1"]["w"] + params["layer1"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def mlp():
    """Three dense layers with relu, nested dict params, (4, 16) -> (4, 10)."""
    r = _rng(0)
    params = {
        "layer0": {"w": _w(r, 16, 32), "b": _w(r, 32, scale=0.1)},
        "layer1": {"w": _w(r, 32, 32), "b": _w(r, 32, scale=0.1)},
        "out": {"w": _w(r, 32, 10), "b": _w(r, 10, scale=0.1)},
    }
    return _mlp_apply, params, (_x(r, 4, 16),)


# --------------------------------------------------------------------------- cnn
def _batch_norm(x, p):
    return (x - p["mean"]) * (p["scale"] * jax.lax.rsqrt(p["var"] + BN_EPS)) + p["bias"]


def _cnn_apply(params, x):
    # conv 1: NHWC / HWIO, SAME padding, stride 1
    y = jax.lax.conv_general_dilated(x, params["conv0"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.nn.relu(_batch_norm(y + params["conv0"]["bias"], params["bn0"]))
    # max pool 2x2 stride 2
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    # conv 2: grouped (feature_group_count=2), stride 2, explicit asymmetric padding
    y = jax.lax.conv_general_dilated(y, params["conv1"]["kernel"], (2, 2), ((1, 1), (0, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=2)
    y = jax.nn.relu(_batch_norm(y + params["conv1"]["bias"], params["bn1"]))
    y = y.reshape(y.shape[0], -1)
    return y @ params["head"]["w"] + params["head"]["b"]


def _bn_params(r, c):
    return {"mean": _w(r, c, scale=0.1), "var": (r.uniform(0.5, 1.5, c)).astype(np.float32),
            "scale": (1.0 + _w(r, c, scale=0.1)), "bias": _w(r, c, scale=0.1)}


def cnn():
    """conv(SAME) + BN + relu + maxpool + grouped strided conv + BN + relu + dense, NHWC (2,8,8,3)."""
    r = _rng(1)
    params = {
        "conv0": {"kernel": _w(r, 3, 3, 3, 8), "bias": _w(r, 8, scale=0.1)},
        "bn0": _bn_params(r, 8),
        # grouped conv: in features per group = 8 / 2 = 4
        "conv1": {"kernel": _w(r, 3, 3, 4, 8), "bias": _w(r, 8, scale=0.1)},
        "bn1": _bn_params(r, 8),
        # 8x8 -> pool 4x4 -> conv stride 2 with pad (1,1),(0,1): H=(4+2-3)//2+1=2, W=(4+1-3)//2+1=2
        "head": {"w": _w(r, 2 * 2 * 8, 10), "b": _w(r, 10, scale=0.1)},
    }
    return _cnn_apply, params, (_x(r, 2, 8, 8, 3),)


# --------------------------------------------------------------------------- transformer
def _layer_norm(x, p, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["gamma"] + p["beta"]


NUM_HEADS = 2


def _attention(x, p):
    b, s, d = x.shape
    hd = d // NUM_HEADS

    def heads(t):
        return t.reshape(b, s, NUM_HEADS, hd).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ p["wq"]), heads(x @ p["wk"]), heads(x @ p["wv"])
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.float32(np.sqrt(hd))
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b, s, d)
    return out @ p["wo"]


def _transformer_apply(params, x):
    x = x + _attention(_layer_norm(x, params["ln0"]), params["attn"])
    h = _layer_norm(x, params["ln1"])
    h = jax.nn.gelu(h @ params["mlp"]["w1"] + params["mlp"]["b1"])
    return x + h @ params["mlp"]["w2"] + params["mlp"]["b2"]


def transformer_block():
    """Pre-LN block: 2-head self-attention + gelu MLP with residuals, (2, 8, 16)."""
    r = _rng(2)
    d, f = 16, 32
    ln = lambda: {"gamma": 1.0 + _w(r, d, scale=0.1), "beta": _w(r, d, scale=0.1)}  # noqa: E731
    params = {
        "ln0": ln(),
        "attn": {"wq": _w(r, d, d), "wk": _w(r, d, d), "wv": _w(r, d, d), "wo": _w(r, d, d)},
        "ln1": ln(),
        "mlp": {"w1": _w(r, d, f), "b1": _w(r, f, scale=0.1),
                "w2": _w(r, f, d), "b2": _w(r, d, scale=0.1)},
    }
    return _transformer_apply, params, (_x(r, 2, 8, d),)


# --------------------------------------------------------------------------- flax-style apply
def _flax_apply(variables, x):
    p = variables["params"]
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def flax_apply():
    """Flax-style ``apply(variables, x)`` with ``{"params": {"Dense_0": {kernel, bias}}}``."""
    r = _rng(3)
    variables = {"params": {
        "Dense_0": {"kernel": _w(r, 12, 24), "bias": _w(r, 24, scale=0.1)},
        "Dense_1": {"kernel": _w(r, 24, 5), "bias": _w(r, 5, scale=0.1)},
    }}
    return _flax_apply, variables, (_x(r, 3, 12),)


# --------------------------------------------------------------------------- closure
def closure():
    """A function closing over numpy weights; called as ``fn(x)`` with no params."""
    r = _rng(4)
    w1, b1 = _w(r, 8, 16), _w(r, 16, scale=0.1)
    w2 = _w(r, 16, 4)

    def fn(x):
        return jnp.tanh(x @ w1 + b1) @ w2

    return fn, None, (_x(r, 5, 8),)


# --------------------------------------------------------------------------- digits
def digits():
    """The bundled digits-cnn example (real trained weights)."""
    from tensorsmith import examples

    ex = examples.load("digits-cnn")
    return ex.fn, ex.params, tuple(np.asarray(a, np.float32) for a in ex.example_inputs)


ZOO: dict[str, Callable[[], tuple[Callable, Any, tuple]]] = {
    "mlp": mlp,
    "cnn": cnn,
    "transformer_block": transformer_block,
    "flax_apply": flax_apply,
    "closure": closure,
    "digits": digits,
}


def fresh_inputs(example_args, seed: int = 123):
    """New random inputs with the same shapes/dtypes (and pytree structure) as ``example_args``."""
    r = _rng(seed)

    def one(a):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            return r.standard_normal(a.shape).astype(a.dtype)
        if a.dtype == np.bool_:
            return r.random(a.shape) < 0.5
        if np.issubdtype(a.dtype, np.integer):
            return r.integers(0, 10, a.shape).astype(a.dtype)
        raise TypeError(f"fresh_inputs: unsupported dtype {a.dtype}")

    return jax.tree_util.tree_map(one, tuple(example_args))


def call(fn, params, *args):
    """Run a zoo model the way its factory documents: ``fn(params, *args)`` or ``fn(*args)``."""
    return fn(*args) if params is None else fn(params, *args)


@functools.lru_cache(maxsize=None)
def traced(name: str, batch_dim=None):
    """The zoo model ``name`` traced to a Graph (cached: graphs are immutable)."""
    import tensorsmith

    fn, params, args = ZOO[name]()
    return tensorsmith.trace(fn, *args, params=params, batch_dim=batch_dim)
