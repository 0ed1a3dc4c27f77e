"""Small JAX models, one per coupling kind the prune analysis must follow, and the exactness
check: remove units structurally and compare with the JAX function run on zeroed params."""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np

import tensorsmith
from tensorsmith.codegen.executor import executor
from tensorsmith.ir import graph_stats, verify
from tensorsmith.passes.prune_groups import analyze, nonempty, remove_units, zero_units

NHWC = ("NHWC", "HWIO", "NHWC")


def _w(r, *shape, scale=None):
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    return (r.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)


def _conv(x, k, groups=1, stride=1, dn=NHWC):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME", dimension_numbers=dn,
                                        feature_group_count=groups)


# --- one model per coupling -----------------------------------------------------------------
def dense_chain():
    """bias add, per-channel scale/shift (batch-norm written out), activation, next dense."""
    r = np.random.default_rng(0)
    p = {"l1": {"w": _w(r, 12, 16), "b": _w(r, 16, scale=0.1)},
         "bn": {"s": 1 + _w(r, 16, scale=0.1), "t": _w(r, 16, scale=0.1)},
         "l2": {"w": _w(r, 16, 5), "b": _w(r, 5, scale=0.1)}}

    def fn(p, x):
        h = jnp.tanh((x @ p["l1"]["w"] + p["l1"]["b"]) * p["bn"]["s"] + p["bn"]["t"])
        return h @ p["l2"]["w"] + p["l2"]["b"]
    return fn, p, (r.standard_normal((3, 12)).astype(np.float32),)


def residual():
    """Both producers of a residual add (and every reader of the sum) in one group."""
    r = np.random.default_rng(1)
    p = {"inp": {"w": _w(r, 8, 16), "b": _w(r, 16, scale=0.1)},
         "a": {"w": _w(r, 16, 24), "b": _w(r, 24, scale=0.1)},
         "bproj": {"w": _w(r, 24, 16), "b": _w(r, 16, scale=0.1)},
         "out": {"w": _w(r, 16, 4)}}

    def fn(p, x):
        h = jax.nn.relu(x @ p["inp"]["w"] + p["inp"]["b"])
        a = jax.nn.relu(h @ p["a"]["w"] + p["a"]["b"])
        s = jax.nn.relu(a @ p["bproj"]["w"] + p["bproj"]["b"] + h)
        return s @ p["out"]["w"]
    return fn, p, (r.standard_normal((5, 8)).astype(np.float32),)


def concat_split():
    """Concat of two convs along channels (offset index map), then a split by slices."""
    r = np.random.default_rng(2)
    p = {"c1": {"k": _w(r, 3, 3, 3, 4)}, "c2": {"k": _w(r, 3, 3, 3, 6), "b": _w(r, 6, scale=0.1)},
         "c3": {"k": _w(r, 1, 1, 10, 8)}, "c4": {"k": _w(r, 3, 3, 3, 4)},
         "c5": {"k": _w(r, 1, 1, 10, 8)}, "head": {"w": _w(r, 8, 3)}}

    def fn(p, x):
        y = jnp.concatenate([_conv(x, p["c1"]["k"]), _conv(x, p["c2"]["k"]) + p["c2"]["b"]], -1)
        y = jax.nn.relu(y)
        a, b = jnp.split(y, [4], axis=-1)  # the slices fall on the concat's pieces, shifted
        z = _conv(jnp.concatenate([b, jax.nn.relu(_conv(x, p["c4"]["k"]))], -1), p["c5"]["k"])
        z = z + _conv(y, p["c3"]["k"]) + jnp.mean(a, -1, keepdims=True)
        return jnp.mean(jax.nn.relu(z), (1, 2)) @ p["head"]["w"]
    return fn, p, (r.standard_normal((2, 6, 6, 3)).astype(np.float32),)


def grouped():
    """A grouped conv (channel i of every group goes together) and a depthwise conv."""
    r = np.random.default_rng(3)
    p = {"c0": {"k": _w(r, 3, 3, 3, 8)}, "g": {"k": _w(r, 3, 3, 4, 8), "b": _w(r, 8, scale=0.1)},
         "dw": {"k": _w(r, 3, 3, 1, 16)}, "head": {"w": _w(r, 16, 4)}}

    def fn(p, x):
        y = jax.nn.relu(_conv(x, p["c0"]["k"]))
        y = jax.nn.relu(_conv(y, p["g"]["k"], groups=2) + p["g"]["b"])
        y = jax.nn.relu(_conv(y, p["dw"]["k"], groups=8))
        y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return jnp.mean(y, (1, 2)) @ p["head"]["w"]
    return fn, p, (r.standard_normal((2, 8, 8, 3)).astype(np.float32),)


def flatten_nchw():
    """Flatten from an NCHW conv into a dense: channel c owns rows c*H*W .. (c+1)*H*W - 1."""
    r = np.random.default_rng(4)
    p = {"c": {"k": _w(r, 6, 3, 3, 3), "b": _w(r, 6, scale=0.1)}, "fc": {"w": _w(r, 6 * 4 * 4, 5)}}

    def fn(p, x):
        y = _conv(x, p["c"]["k"], stride=2, dn=("NCHW", "OIHW", "NCHW"))
        y = jax.nn.relu(y + p["c"]["b"][None, :, None, None])
        return y.reshape(y.shape[0], -1) @ p["fc"]["w"]
    return fn, p, (r.standard_normal((2, 3, 8, 8)).astype(np.float32),)


def gqa_block(repeat_kv: bool = False):
    """Pre-LN transformer block with grouped-query attention (4 Q heads, 2 K/V heads)."""
    r = np.random.default_rng(5)
    d, hq, hkv, hd, f = 32, 4, 2, 8, 64
    ln = lambda: {"g": 1 + _w(r, d, scale=0.1), "b": _w(r, d, scale=0.1)}  # noqa: E731
    p = {"ln0": ln(), "attn": {"wq": _w(r, d, hq * hd), "wk": _w(r, d, hkv * hd),
                               "wv": _w(r, d, hkv * hd), "wo": _w(r, hq * hd, d)},
         "ln1": ln(), "mlp": {"w1": _w(r, d, f), "b1": _w(r, f, scale=0.1), "w2": _w(r, f, d)}}

    def norm(x, q):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / jnp.sqrt(v + 1e-5) * q["g"] + q["b"]

    def attn(x, a):
        b, s, _ = x.shape
        k = (x @ a["wk"]).reshape(b, s, hkv, hd)
        v = (x @ a["wv"]).reshape(b, s, hkv, hd)
        if repeat_kv:  # K/V copied to every Q head of their group, Q heads flat
            q = (x @ a["wq"]).reshape(b, s, hq, hd)
            k, v = jnp.repeat(k, hq // hkv, axis=2), jnp.repeat(v, hq // hkv, axis=2)
            w = jax.nn.softmax(jnp.einsum("bshd,bthd->bhst", q, k) / np.sqrt(hd), -1)
            o = jnp.einsum("bhst,bthd->bshd", w, v)
        else:  # Q heads grouped under their K/V head
            q = (x @ a["wq"]).reshape(b, s, hkv, hq // hkv, hd)
            w = jax.nn.softmax(jnp.einsum("bskgd,btkd->bkgst", q, k) / np.sqrt(hd), -1)
            o = jnp.einsum("bkgst,btkd->bskgd", w, v)
        return o.reshape(b, s, hq * hd) @ a["wo"]

    def fn(p, x):
        x = x + attn(norm(x, p["ln0"]), p["attn"])
        h = jax.nn.gelu(norm(x, p["ln1"]) @ p["mlp"]["w1"] + p["mlp"]["b1"])
        return x + h @ p["mlp"]["w2"]
    return fn, p, (r.standard_normal((2, 6, d)).astype(np.float32),)


# --- helpers --------------------------------------------------------------------------------
def with_params(params, flat: dict):
    """A copy of the nested ``params`` with the entries named ``a/b`` replaced from ``flat``."""
    out = copy.deepcopy(jax.tree_util.tree_map(np.asarray, params))
    for name, arr in flat.items():
        node = out
        *path, leaf = name.split("/")
        for k in path:
            node = node[k]
        node[leaf] = np.asarray(arr)
    return out


def pick_units(an, fraction=0.5, seed=0):
    """About ``fraction`` of the free units of every group (at least one kept per group)."""
    rng = np.random.default_rng(seed)
    out = []
    for g in an.groups:
        free = [u for u in g.units if not an.units[u].blocked]
        n = min(int(round(fraction * len(g.units))), len(free), len(g.units) - 1)
        out += [int(u) for u in rng.choice(free, size=n, replace=False)] if n > 0 else []
    return out


def check_exact(fn, params, args, fraction=0.5, seed=0):
    """Remove units structurally; the result equals ``fn`` on params with those units zeroed."""
    g = tensorsmith.trace(fn, *args, params=params)
    an = analyze(g)
    rm = nonempty(an, pick_units(an, fraction, seed))
    assert rm, "nothing prunable"
    masked = zero_units(g, an, rm)
    pruned = remove_units(g, an, rm)
    verify(pruned)
    want = np.asarray(fn(with_params(params, dict(masked.params)), *args))
    dense = np.asarray(fn(params, *args))
    assert not np.allclose(want, dense, rtol=1e-3, atol=1e-3), "zeroing the units changed nothing"
    got = executor(pruned)(*args)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    a, b = graph_stats(g), graph_stats(pruned)
    assert b.param_elems < a.param_elems and b.flops < a.flops
    return g, an, pruned


def unit_with(an, param: str, axis: int, pos: int = 0):
    """The unit owning position ``pos`` of axis ``axis`` of ``param``."""
    return an.units[int(an.unit_of[(param, axis)][pos])]
