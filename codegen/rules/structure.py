"""Lowering of composites: the body is inlined into the surrounding trace."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...ir import numpy_dtype, origin
from ..lowering import lowering
from .fused import lower_fused
from .softmax import composite_softmax


@lowering("composite")
def _composite(ctx, node, *args):
    safe = composite_softmax(node)  # jax.nn.softmax: see softmax.py for why not the body
    if safe is not None:
        return (safe(args[0]),)
    done = lower_fused(ctx, node, args)  # fused.layer_norm, fused.attention, ...: fused.py
    if done is not None:
        return done
    original = _original(ctx, node, args)
    if original is not None:
        return tuple(original)
    named = _jax_nn(ctx, node)
    if named is not None:
        return (named(args[0]),)
    outs = ctx.run_region(node.body, args)
    return tuple(outs)


def _original(ctx, node, args):
    """The traced function itself (custom_jvp/vjp rule included) while the body is unchanged."""
    if ctx.symbolic:
        return None
    fn = origin.original_rule(node.attrs.get("name", ""), node.body,
                              tuple((tuple(a.shape), np.dtype(a.dtype)) for a in args))
    if fn is None:
        return None
    try:
        return fn(list(args), ctx.params)
    except Exception:  # noqa: BLE001 - the body computes the same values: lower it instead
        return None


# jax.nn functions whose derivative is a custom rule, not their ops' (relu's is 0 at 0 where
# max(x, 0) gives 0.5). A composite named for one, with one input and no weights, lowers
# through the function itself when its body (as traced, or as passes left it) computes the
# same values on probe inputs (a pass may rewrite max(x, 0) to relu, or fuse two calls).
_CUSTOM_RULE_FNS = {"jax.nn.relu": jax.nn.relu, "jax.nn.relu6": jax.nn.relu6,
                    "jax.nn.softplus": jax.nn.softplus}
_PROBE = np.array([-7.0, -3.0, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, 3.0, 6.0, 7.0, 40.0])
_CHECKED: dict = {}


def _jax_nn(ctx, node):
    """The jax.nn function a composite's body computes, if it has a custom derivative rule."""
    fn = _CUSTOM_RULE_FNS.get(node.attrs.get("name"))
    if fn is None or ctx.symbolic or len(node.inputs) != 1 or len(node.outputs) != 1:
        return None
    t = node.inputs[0].type
    if t != node.outputs[0].type or t.dtype not in ("f16", "bf16", "f32", "f64") or not t.is_static:
        return None
    body = node.body
    inner = {v.name for v in body.inputs} | {v.name for n in body.nodes for v in n.outputs}
    if any(v.name not in inner for n in body.nodes for v in n.inputs):
        return None  # reads a weight: not the plain function
    key = (node.attrs["name"], body.to_text())
    if key not in _CHECKED:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        dtype = numpy_dtype(t.dtype)
        probe = np.resize(_PROBE, tuple(t.shape)).astype(dtype)
        with jax.ensure_compile_time_eval():
            got = np.asarray(ctx.run_region(body, [jnp.asarray(probe)])[0], np.float64)
            want = np.asarray(fn(jnp.asarray(probe)), np.float64)
        _CHECKED[key] = bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))
    return fn if _CHECKED[key] else None
