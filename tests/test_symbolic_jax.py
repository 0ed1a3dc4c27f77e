"""A JAX CNN traced with symbolic H, W (jax.export.symbolic_shape), compiled once, called at
several image sizes against the original function."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import tensorsmith
from tensorsmith.frontends.jax import trace

RNG = np.random.default_rng(0)
PARAMS = {"w1": RNG.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3,
          "w2": RNG.standard_normal((3, 3, 8, 8)).astype(np.float32) * 0.1,
          "wd": RNG.standard_normal((8, 5)).astype(np.float32)}


def cnn(p, x):
    dn = ("NHWC", "HWIO", "NHWC")
    y = jax.nn.relu(jax.lax.conv_general_dilated(x, p["w1"], (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn))
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                              ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = jax.nn.relu(jax.lax.conv_general_dilated(y, p["w2"], (1, 1), "SAME", dimension_numbers=dn)) + y
    return jnp.mean(y, axis=(1, 2)) @ p["wd"]


SPEC = jax.ShapeDtypeStruct(jax.export.symbolic_shape("N, H, W, 3"), np.float32)


def test_symbolic_types_in_normal_form():
    g = trace(cnn, SPEC, params=PARAMS)
    assert str(g.inputs[0].type) == "f32[N,H,W,3]"
    types = {str(o.type) for n in g.nodes for o in n.outputs}
    assert "f32[N,(H+1)//2,(W+1)//2,8]" in types and "f32[N,(H+3)//4,(W+3)//4,8]" in types
    assert str(g.outputs[0].type) == "f32[N,5]"


def test_compiled_once_runs_at_many_image_sizes():
    cm = tensorsmith.compile(cnn, SPEC, params=PARAMS)
    for shape in [(1, 16, 16, 3), (2, 19, 23, 3), (3, 8, 31, 3)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(cnn(PARAMS, x)), rtol=1e-4, atol=1e-4)
