"""Lowerings of the composites ``fuse`` forms: norms in f32, attention through one kernel.

A fused composite keeps its body (what it replaced), so a composite whose name has no rule
here, or whose attributes this rule does not understand, is inlined as before.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .softmax import safe_softmax

FUSED: dict = {}


def fused(name: str):
    def deco(fn):
        FUSED[name] = fn
        return fn
    return deco


def _wide(dtype):
    """The type a norm is computed in: f32 for 16-bit floats, else the input's own."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def _affine(node, y, args, out_dtype):
    rest = list(args[1:])
    if node.attrs.get("scale"):
        y = y * rest.pop(0).astype(y.dtype)
    if node.attrs.get("offset"):
        y = y + rest.pop(0).astype(y.dtype)
    return y.astype(out_dtype)


@fused("fused.layer_norm")
def _layer_norm(ctx, node, *args):
    x = args[0]
    axes = tuple(node.attrs["axes"])
    xs = x.astype(_wide(x.dtype))
    mean = jnp.mean(xs, axis=axes, keepdims=True)
    c = xs - mean
    var = jnp.mean(jnp.square(c), axis=axes, keepdims=True)
    y = c * jax.lax.rsqrt(var + jnp.asarray(node.attrs["epsilon"], xs.dtype))
    return (_affine(node, y, args, _out_dtype(node)),)


@fused("fused.rms_norm")
def _rms_norm(ctx, node, *args):
    x = args[0]
    axes = tuple(node.attrs["axes"])
    xs = x.astype(_wide(x.dtype))
    ms = jnp.mean(jnp.square(xs), axis=axes, keepdims=True)
    y = xs * jax.lax.rsqrt(ms + jnp.asarray(node.attrs["epsilon"], xs.dtype))
    return (_affine(node, y, args, _out_dtype(node)),)


def _out_dtype(node):
    from ...ir import numpy_dtype
    return numpy_dtype(node.outputs[0].type.dtype)


# --- attention ------------------------------------------------------------------------------
def _canonical(x, dims, nb):
    """``x`` transposed to (batch..., seq, feature), batch dims merged to [B, N]."""
    x = jnp.transpose(x, dims)
    b = x.shape[:nb]
    if nb == 0:
        x = x[None, None]
    elif nb == 1:
        x = x[:, None]
    elif nb > 2:
        x = x.reshape((math.prod(b[:-1]), b[-1]) + x.shape[nb:])
    return x  # [B, N, seq, feature]


def _scores_shape(b, t, s):
    return tuple(b) + (t, s)


@fused("fused.attention")
def _attention(ctx, node, q, k, v, *rest):
    """softmax(q.k * scale (+ bias | where(mask, ., fill))) . v with the safe softmax.

    Built here as the unfused graph's own program (einsum, safe softmax of softmax.py,
    einsum), so fused and unfused results agree. On a host with a GPU, 16-bit attention is
    also offered cuDNN's fused kernel through ``jax.nn.dot_product_attention(implementation=
    "cudnn")`` (in this jax ``None`` means the XLA program above), chosen by
    ``lax.platform_dependent`` when the program is lowered for CUDA, so a CPU compile on a
    GPU host never sees the cuDNN call.
    """
    a = node.attrs
    nb = a["num_batch"]
    qc = _canonical(q, a["q_dims"], nb)  # [B, N, T, D]
    kc = _canonical(k, a["k_dims"], nb)
    vc = _canonical(v, a["v_dims"], nb)
    batch = jnp.transpose(q, a["q_dims"]).shape[:nb]
    t, s = qc.shape[2], kc.shape[2]
    mask_kind = a["mask"]
    operands = [qc, kc, vc]
    if rest:
        extra = rest[0]
        if mask_kind == "boolean" and not a.get("keep", True):  # where(mask, fill, scores)
            extra = jnp.logical_not(extra)
        operands.append(_bias4(extra, batch, t, s))  # [B, N, T, S]

    def xla(*ops):
        return _xla(*ops[:3], ops[3] if len(ops) > 3 else None, mask_kind, a)

    def cudnn(*ops):
        return _cudnn(*ops[:3], ops[3] if len(ops) > 3 else None, mask_kind, a)

    if _gpu_host() and _cudnn_suits(qc, kc, vc, mask_kind, a) and _traces(cudnn, operands):
        out = jax.lax.platform_dependent(*operands, cuda=cudnn, default=xla)
    else:
        out = xla(*operands)
    # [B, N, T, Dv] -> (batch..., T, Dv)
    out = out.reshape(tuple(batch) + out.shape[2:])
    if a.get("v_first"):  # the product was V·Pᵀ: (batch..., feature, sequence)
        out = jnp.swapaxes(out, -1, -2)
    return (out.astype(_out_dtype(node)),)


def _bias4(x, batch, t, s):
    """A bias/mask broadcast to the scores' shape, merged to [B, N, T, S]."""
    full = jnp.broadcast_to(x, _scores_shape(batch, t, s))
    nb = len(batch)
    if nb == 0:
        return full[None, None]
    if nb == 1:
        return full[:, None]
    if nb > 2:
        return full.reshape((math.prod(batch[:-1]), batch[-1], t, s))
    return full


def _xla(q, k, v, extra, mask_kind, a):
    d, s = q.shape[-1], k.shape[-2]
    # scale whichever is smaller: Q [T, D] or the logits [T, S] (float reassociation only)
    on_q = a["scale"] != 1.0 and isinstance(d, int) and isinstance(s, int) and d < s
    if on_q:
        q = q * jnp.asarray(a["scale"], q.dtype)
    logits = jnp.einsum("bntd,bnsd->bnts", q, k)
    if a["scale"] != 1.0 and not on_q:
        logits = logits * jnp.asarray(a["scale"], logits.dtype)
    if mask_kind == "additive":
        logits = logits + extra.astype(logits.dtype)
    elif mask_kind == "boolean":
        logits = jnp.where(extra, logits, jnp.asarray(a["fill"], logits.dtype))
    probs = safe_softmax(logits, 3)
    if a.get("zero_dead_rows"):  # ONNX Attention: a query whose bias masks every key sees none
        dead = jnp.max(extra, axis=3, keepdims=True) == -jnp.inf
        probs = jnp.where(dead, jnp.zeros((), probs.dtype), probs)
    if a.get("nan_to_zero"):
        probs = jnp.where(jnp.isnan(probs), jnp.zeros((), probs.dtype), probs)
    return jnp.einsum("bnts,bnsd->bntd", probs.astype(v.dtype), v)


def _gpu_host() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def _cudnn_suits(q, k, v, mask_kind, a) -> bool:
    """What cuDNN's flash attention takes: 16-bit, head size a multiple of 8 up to 128."""
    d = q.shape[-1]
    return (q.dtype in (jnp.bfloat16, jnp.float16) and q.dtype == k.dtype == v.dtype
            and isinstance(d, int) and d == v.shape[-1] and d % 8 == 0 and d <= 128
            and not a.get("nan_to_zero") and not a.get("zero_dead_rows")
            and (mask_kind != "boolean" or a["fill"] <= -1e4))


def _traces(fn, operands) -> bool:
    """Whether ``fn`` traces for these operands (cuDNN's checks refuse at trace time)."""
    try:
        jax.eval_shape(fn, *[jax.ShapeDtypeStruct(o.shape, o.dtype) for o in operands])
    except Exception:  # cuDNN refuses this shape/dtype/device: the XLA program is used
        return False
    return True


def _cudnn(q, k, v, extra, mask_kind, a):
    """jax.nn.dot_product_attention's cuDNN kernel (its [B, T, N, H] layout)."""
    bthn = (0, 2, 1, 3)
    bias = extra.astype(q.dtype) if mask_kind == "additive" else None
    mask = extra if mask_kind == "boolean" else None
    out = jax.nn.dot_product_attention(
        jnp.transpose(q, bthn), jnp.transpose(k, bthn), jnp.transpose(v, bthn),
        bias=bias, mask=mask, scale=float(a["scale"]), implementation="cudnn")
    return jnp.transpose(out, bthn)


def lower_fused(ctx, node, args):
    """The fused lowering for a ``fused.*`` composite, or None (inline its body)."""
    fn = FUSED.get(node.attrs.get("name", ""))
    return None if fn is None else fn(ctx, node, *args)
