"""Softmax and log-softmax lowerings that cannot overflow, whatever XLA fuses.

XLA:CPU may fuse ``x - max(x)`` with the producer of ``x`` into one FMA (``sum * (1/169)
- max`` in a global average pool), so an element equal to the max no longer gives exactly 0
and, for logits of size ~1e9, ``exp`` of the rounding residue overflows: all-NaN output
(ONNX's own ``light_squeezenet.onnx``). An optimization barrier does not help: XLA:CPU drops
it. So the difference is fixed by comparison instead of trusted to cancel: elements equal to
the row max (compared as rounded values, which no FMA touches) get exactly 0, every other
difference is clamped to <= 0. The row sum is then >= 1, and ``+inf`` logits share the mass
equally (the limit) rather than giving ``inf - inf = NaN``.
"""
from __future__ import annotations

import jax.numpy as jnp

from ..lowering import lowering


def _shifted(x, axes):
    """``x - max(x)`` over ``axes``: exactly 0 at the max, never positive."""
    m = jnp.max(x, axis=axes, keepdims=True)
    return jnp.where(x == m, jnp.zeros((), x.dtype), jnp.minimum(x - m, jnp.zeros((), x.dtype)))


# f16/bf16 are computed in their own type, as jax.nn.softmax and the ONNX reference do
# (an f32 computation rounds differently and breaks the f16 attention conformance cases).
def safe_softmax(x, axes):
    """softmax(x) over ``axes`` (an int or a tuple of ints)."""
    e = jnp.exp(_shifted(x, axes))
    return e / jnp.sum(e, axis=axes, keepdims=True)


def safe_log_softmax(x, axes):
    """log_softmax(x) over ``axes`` (an int or a tuple of ints)."""
    d = _shifted(x, axes)
    return d - jnp.log(jnp.sum(jnp.exp(d), axis=axes, keepdims=True))


@lowering("softmax")
def _softmax(ctx, node, x):
    return safe_softmax(x, node.attrs.get("axis", -1))


@lowering("log_softmax")
def _log_softmax(ctx, node, x):
    return safe_log_softmax(x, node.attrs.get("axis", -1))


# jax.nn.softmax / log_softmax traced by the JAX frontend arrive as composites whose body is
# jax's own max-subtract-exp sequence, which XLA fuses the same way. A body that is exactly
# that sequence is lowered with the rules above (axes read from its reduce_max); any other
# body (``where=`` given, a pass rewrote it, another jax version) is inlined as it is.
_PREFIX = ("reduce_max", "constant", "max", "broadcast_in_dim", "sub", "exp", "reduce_sum",
           "broadcast_in_dim")
_COMPOSITES = {"jax.nn.softmax": (safe_softmax, _PREFIX + ("div",)),
               "jax.nn.log_softmax": (safe_log_softmax, _PREFIX + ("log", "sub"))}


def composite_softmax(node):
    """The safe lowering for a softmax-family composite, or None for any other composite."""
    fn, ops = _COMPOSITES.get(node.attrs.get("name"), (None, None))
    if fn is None or len(node.inputs) != 1 or len(node.outputs) != 1 or len(node.regions) != 1:
        return None
    body = node.regions[0]
    # jax stops the gradient of the max; the shift cancels in softmax's value and derivative
    nodes = [n for n in body.nodes if n.op != "stop_gradient"]
    if (tuple(n.op for n in nodes) != ops or len(body.inputs) != 1
            or body.inputs[0].type != node.outputs[0].type
            or body.outputs[0] is not body.nodes[-1].outputs[0]):
        return None
    first, const = nodes[0], nodes[1]
    if (first.inputs[0].name != body.inputs[0].name or not first.attrs.get("axes")
            or const.attrs.get("value") != float("-inf")):
        return None
    axes = tuple(first.attrs["axes"])
    return lambda x: fn(x, axes)
