"""Every fusion pattern as a JAX function and as an ONNX model (onnx.helper), for the fuse tests.

``CASES[name] = (composite name, jax builder, onnx builder)``; a jax builder returns
``(fn, example args, params)``, an onnx builder ``(model, feeds)``. Inputs are fresh random
arrays from the given seed.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

F = np.float32


def rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(F)


# --------------------------------------------------------------------------- ONNX helpers
def model(nodes, inputs, outputs, inits=(), opset=17):
    """A checked ONNX model; ``inputs``/``outputs`` are (name, shape) pairs of floats."""
    g = h.make_graph(nodes, "case", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs],
                     [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 20 else 10
    onnx.checker.check_model(m)
    return m


def const(name, value):
    return (name, np.asarray(value, F))


# --------------------------------------------------------------------------- dense + activations
D_IN, D_OUT = 8, 16


def _dense_params(seed=0):
    return {"w": rand(seed, D_IN, D_OUT), "b": rand(seed + 1, D_OUT)}


def _gelu_written(x):
    return 0.5 * x * (1.0 + jax.lax.erf(x / math.sqrt(2.0)))


def _gelu_tanh_written(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _hard_swish_written(x):
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


JAX_ACTS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
            "gelu_written": _gelu_written, "gelu_tanh_written": _gelu_tanh_written,
            "silu": jax.nn.silu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
            "clip": jax.nn.relu6, "hard_swish": jax.nn.hard_swish,
            "hard_swish_written": _hard_swish_written}


def jax_dense_act(act):
    def build(seed):
        fn = JAX_ACTS[act]

        def f(p, x):
            return fn(x @ p["w"] + p["b"])
        return f, (rand(seed, 4, D_IN, scale=2.0),), _dense_params()
    return build


def _onnx_act_nodes(act, x, y):
    """ONNX nodes computing ``y = act(x)`` (a few need constants: returned as inits)."""
    if act in ("relu", "sigmoid", "tanh"):
        return [h.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[act], [x], [y])], []
    if act == "gelu":
        return [h.make_node("Gelu", [x], [y], approximate="tanh")], []
    if act == "gelu_erf":
        return [h.make_node("Gelu", [x], [y])], []
    if act == "gelu_written":  # as torch.onnx exports nn.GELU() at opset < 20
        return [h.make_node("Div", [x, "sqrt2"], ["g0"]), h.make_node("Erf", ["g0"], ["g1"]),
                h.make_node("Add", ["g1", "one"], ["g2"]), h.make_node("Mul", [x, "g2"], ["g3"]),
                h.make_node("Mul", ["g3", "half"], [y])], \
            [const("sqrt2", math.sqrt(2)), const("one", 1.0), const("half", 0.5)]
    if act == "gelu_tanh_written":  # nn.GELU(approximate="tanh") at opset < 20
        return [h.make_node("Mul", [x, "half"], ["t0"]), h.make_node("Pow", [x, "three"], ["t1"]),
                h.make_node("Mul", ["t1", "c"], ["t2"]), h.make_node("Add", [x, "t2"], ["t3"]),
                h.make_node("Mul", ["t3", "k"], ["t4"]), h.make_node("Tanh", ["t4"], ["t5"]),
                h.make_node("Add", ["t5", "one"], ["t6"]), h.make_node("Mul", ["t0", "t6"], [y])], \
            [const("half", 0.5), const("three", 3.0), const("c", 0.044715),
             const("k", math.sqrt(2 / math.pi)), const("one", 1.0)]
    if act == "silu":
        return [h.make_node("Sigmoid", [x], ["s0"]), h.make_node("Mul", [x, "s0"], [y])], []
    if act == "clip":
        return [h.make_node("Clip", [x, "lo", "hi"], [y])], [const("lo", 0.0), const("hi", 6.0)]
    if act == "hard_swish":
        return [h.make_node("HardSwish", [x], [y])], []
    if act == "hard_swish_written":
        return [h.make_node("Add", [x, "three"], ["h0"]), h.make_node("Clip", ["h0", "lo", "hi"], ["h1"]),
                h.make_node("Mul", [x, "h1"], ["h2"]), h.make_node("Div", ["h2", "six"], [y])], \
            [const("three", 3.0), const("lo", 0.0), const("hi", 6.0), const("six", 6.0)]
    raise KeyError(act)


def onnx_dense_act(act):
    def build(seed):
        p = _dense_params()
        acts, inits = _onnx_act_nodes(act, "z", "y")
        opset = 20 if act.startswith("gelu") and "written" not in act else 17
        nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Add", ["mm", "b"], ["z"]), *acts]
        m = model(nodes, [("x", ["N", D_IN])], [("y", ["N", D_OUT])],
                  [("w", p["w"]), ("b", p["b"]), *inits], opset=opset)
        return m, {"x": rand(seed, 4, D_IN, scale=2.0)}
    return build


def jax_conv_relu(layout):
    def build(seed):
        w_shape = (3, 3, 4, 8) if layout == "NHWC" else (8, 4, 3, 3)
        p = {"w": rand(1, *w_shape), "b": rand(2, 8)}
        dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")

        def f(p, x):
            y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=dn)
            return jax.nn.relu(y + (p["b"] if layout == "NHWC" else p["b"][:, None, None]))
        x = rand(seed, 2, 6, 6, 4) if layout == "NHWC" else rand(seed, 2, 4, 6, 6)
        return f, (x,), p
    return build


def onnx_conv_relu(seed):
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6, 6])], [("y", ["N", 8, 6, 6])], [("w", rand(1, 8, 4, 3, 3)), ("b", rand(2, 8))])
    return m, {"x": rand(seed, 2, 4, 6, 6)}


# --------------------------------------------------------------------------- norms
HID = 24


def _norm_params():
    return {"g": rand(5, HID), "b": rand(6, HID)}


def jax_layer_norm(flavour):
    def build(seed):
        def plain(p, x):
            m = jnp.mean(x, -1, keepdims=True)
            v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
            return (x - m) * jax.lax.rsqrt(v + 1e-5) * p["g"] + p["b"]

        def flax(p, x):  # flax.linen.LayerNorm: fast variance, scale folded into the rsqrt
            m = jnp.mean(x, -1, keepdims=True)
            v = jnp.maximum(0.0, jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(m))
            return (x - m) * (jax.lax.rsqrt(v + 1e-6) * p["g"]) + p["b"]

        def sqrt_div(p, x):
            c = x - jnp.mean(x, -1, keepdims=True)
            return c / jnp.sqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-5) * p["g"] + p["b"]
        f = {"plain": plain, "flax": flax, "sqrt_div": sqrt_div}[flavour]
        return f, (rand(seed, 3, 7, HID, scale=3.0) + 1.5,), _norm_params()
    return build


def jax_rms_norm(seed):
    def f(p, x):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * p["g"]
    return f, (rand(seed, 3, 7, HID, scale=3.0),), _norm_params()


def onnx_layer_norm(kind):
    def build(seed):
        p = _norm_params()
        io = ([("x", ["N", 7, HID])], [("y", ["N", 7, HID])])
        if kind == "op":
            nodes = [h.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
            m = model(nodes, *io, [("g", p["g"]), ("b", p["b"])])
        else:  # as torch.onnx exports nn.LayerNorm below opset 17
            nodes = [h.make_node("ReduceMean", ["x"], ["m"], axes=[-1]), h.make_node("Sub", ["x", "m"], ["c"]),
                     h.make_node("Pow", ["c", "two"], ["c2"]), h.make_node("ReduceMean", ["c2"], ["v"], axes=[-1]),
                     h.make_node("Add", ["v", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["s"]),
                     h.make_node("Div", ["c", "s"], ["n"]), h.make_node("Mul", ["n", "g"], ["ng"]),
                     h.make_node("Add", ["ng", "b"], ["y"])]
            m = model(nodes, *io, [("g", p["g"]), ("b", p["b"]), const("two", 2.0), const("eps", 1e-5)],
                      opset=13)
        return m, {"x": rand(seed, 3, 7, HID, scale=3.0) + 1.5}
    return build


def onnx_rms_norm(seed):
    """RMS norm as torch.onnx exports a LlamaRMSNorm (Pow, ReduceMean, Add, Sqrt, Reciprocal)."""
    p = _norm_params()
    nodes = [h.make_node("Pow", ["x", "two"], ["x2"]), h.make_node("ReduceMean", ["x2"], ["ms"], axes=[-1]),
             h.make_node("Add", ["ms", "eps"], ["mse"]), h.make_node("Sqrt", ["mse"], ["s"]),
             h.make_node("Reciprocal", ["s"], ["r"]), h.make_node("Mul", ["x", "r"], ["n"]),
             h.make_node("Mul", ["g", "n"], ["y"])]
    m = model(nodes, [("x", ["N", 7, HID])], [("y", ["N", 7, HID])],
              [("g", p["g"]), const("two", 2.0), const("eps", 1e-6)], opset=13)
    return m, {"x": rand(seed, 3, 7, HID, scale=3.0)}


# --------------------------------------------------------------------------- attention
B, H, S, DH = 2, 3, 6, 8


def _mask(seed, shape):
    m = np.random.default_rng(seed).random(shape) > 0.3
    m[..., 0] = True  # every query sees at least one key
    return m


def jax_attention(mask):
    def build(seed):
        q, k, v = (rand(seed + i, B, H, S, DH) for i in range(3))

        def none(q, k, v):
            s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(DH)
            return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)

        def additive(q, k, v, bias):
            s = (q * 0.35) @ jnp.swapaxes(k, -1, -2) + bias
            return jax.nn.softmax(s, axis=-1) @ v

        def boolean(q, k, v, m):
            s = jnp.where(m, jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.3, -1e9)
            return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)

        if mask == "none":
            return none, (q, k, v), None
        if mask == "additive":
            return additive, (q, k, v, rand(seed + 7, B, 1, S, S)), None
        return boolean, (q, k, v, _mask(seed, (B, 1, S, S))), None
    return build


def onnx_attention(mask):
    """BERT-style attention as torch.onnx exports it: heads split by Reshape/Transpose."""
    def build(seed):
        hid = H * DH
        split = [h.make_node("Reshape", [n, "shape4"], [n + "4"]) for n in ("q", "k", "v")]
        nodes = [*split,
                 h.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
                 h.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
                 h.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
                 h.make_node("MatMul", ["qh", "kt"], ["qk"]),
                 h.make_node("Div", ["qk", "sqrt_d"], ["s0"])]
        inputs = [(n, ["N", S, hid]) for n in ("q", "k", "v")]
        inits = [("shape4", np.array([0, 0, H, DH], np.int64)), const("sqrt_d", math.sqrt(DH))]
        feeds = {n: rand(seed + i, B, S, hid) for i, n in enumerate(("q", "k", "v"))}
        if mask == "additive":
            nodes.append(h.make_node("Add", ["s0", "bias"], ["s"]))
            inputs.append(("bias", ["N", 1, 1, S]))
            feeds["bias"] = np.where(_mask(seed, (B, 1, 1, S)), 0.0, np.finfo(F).min).astype(F)
        elif mask == "boolean":
            nodes.append(h.make_node("Where", ["keep", "s0", "neg"], ["s"]))
            inits.append(const("neg", -1e9))
        else:
            nodes[-1].output[0] = "s"
        nodes += [h.make_node("Softmax", ["s"], ["p"], axis=-1), h.make_node("MatMul", ["p", "vh"], ["o"]),
                  h.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
                  h.make_node("Reshape", ["ot", "shape3"], ["y"])]
        inits.append(("shape3", np.array([0, 0, hid], np.int64)))
        g_inputs = [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs]
        if mask == "boolean":
            g_inputs.append(h.make_tensor_value_info("keep", T.BOOL, ["N", 1, S, S]))
            feeds["keep"] = _mask(seed, (B, 1, S, S))
        g = h.make_graph(nodes, "attention", g_inputs, [h.make_tensor_value_info("y", T.FLOAT, ["N", S, hid])],
                         [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m, feeds
    return build


CASES = {f"dense_bias_{a}": (f"fused.dense_bias_{_k}", jax_dense_act(a), onnx_dense_act(a))
         for a, _k in [("relu", "relu"), ("gelu", "gelu"), ("gelu_erf", "gelu"),
                       ("gelu_written", "gelu"), ("gelu_tanh_written", "gelu"), ("silu", "silu"),
                       ("sigmoid", "sigmoid"), ("tanh", "tanh"), ("clip", "clip"),
                       ("hard_swish", "hard_swish"), ("hard_swish_written", "hard_swish")]}
CASES.update({
    "conv_bias_relu_nchw": ("fused.conv_bias_relu", jax_conv_relu("NCHW"), onnx_conv_relu),
    "conv_bias_relu_nhwc": ("fused.conv_bias_relu", jax_conv_relu("NHWC"), onnx_conv_relu),
    "layer_norm": ("fused.layer_norm", jax_layer_norm("plain"), onnx_layer_norm("op")),
    "layer_norm_written": ("fused.layer_norm", jax_layer_norm("flax"), onnx_layer_norm("written")),
    "layer_norm_sqrt_div": ("fused.layer_norm", jax_layer_norm("sqrt_div"), onnx_layer_norm("written")),
    "rms_norm": ("fused.rms_norm", jax_rms_norm, onnx_rms_norm),
    "attention": ("fused.attention", jax_attention("none"), onnx_attention("none")),
    "attention_additive_mask": ("fused.attention", jax_attention("additive"), onnx_attention("additive")),
    "attention_boolean_mask": ("fused.attention", jax_attention("boolean"), onnx_attention("boolean")),
})


def composite_names(g):
    """Names of the top-level composites of a graph, in order."""
    return [n.attrs["name"] for n in g.nodes if n.op == "composite"]


def fuse_missed(cm):
    """The `missed` remarks of the fuse pass, as text."""
    return [str(r) for rec in cm.history for r in rec.remarks
            if r.kind == "missed" and rec.name == "fuse"]


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol,
                               atol=tol)
