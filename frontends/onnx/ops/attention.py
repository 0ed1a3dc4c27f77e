"""Transformer blocks: Attention (opset 23-25), RotaryEmbedding, RMSNormalization, SwiGLU.

Attention follows onnx's reference implementation step by step (scale split over Q and K,
additive -inf bias from masks, fully-masked rows give zeros) so results match it, not just
approximately the math.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import ir_dtype
from ..registry import onnx_op
from ._util import norm_axis
from .reduce import element_count

NEG_INF = -np.inf


# --- small builders --------------------------------------------------------------------------
def split_heads(ctx, x, num_heads: int):
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hidden = x.shape
    if not isinstance(hidden, int) or not num_heads or hidden % num_heads:
        ctx.unsupported(f"hidden size {hidden} of {x.type} does not split into {num_heads} heads")
    y = ctx.reshape(x, (b, s, num_heads, hidden // num_heads))
    return ctx.op("transpose", y, permutation=(0, 2, 1, 3))


def merge_heads(ctx, x):
    """[B, H, S, D] -> [B, S, H*D]."""
    b, h, s, d = x.shape
    y = ctx.op("transpose", x, permutation=(0, 2, 1, 3))
    return ctx.reshape(y, (b, s, h * d))


def repeat_heads(ctx, x, reps: int):
    """Each head repeated ``reps`` times in place ([h0, h0, h1, h1, ...]), as np.repeat(axis=1)."""
    if reps == 1:
        return x
    b, h, s, d = x.shape
    y = ctx.op("broadcast_in_dim", x, shape=(b, h, reps, s, d), broadcast_dimensions=(0, 1, 3, 4))
    return ctx.reshape(y, (b, h * reps, s, d))


def slice_axis(ctx, x, axis: int, start: int, stop: int, step: int = 1):
    """``x[..., start:stop:step, ...]`` along ``axis``."""
    rank = x.type.rank
    begin = [0] * rank
    limit = list(x.shape)
    strides = [1] * rank
    begin[axis], limit[axis], strides[axis] = start, stop, step
    if begin == [0] * rank and limit == list(x.shape) and step == 1:
        return x
    return ctx.op("slice", x, start=tuple(begin), limit=tuple(limit), strides=tuple(strides))


def safe_softmax(ctx, x):
    """Softmax over the last axis where an all -inf row gives zeros (not NaN)."""
    axes = (x.type.rank - 1,)
    m = ctx.op("reduce_max", x, axes=axes, keepdims=True)
    m = ctx.op("select", ctx.op("eq", m, ctx.scalar(NEG_INF, x)), ctx.scalar(0, x), m)
    e = ctx.op("exp", ctx.op("sub", x, m))
    # f16: sum and divide in f32, rounding once per step as numpy does (XLA's f16 reductions
    # accumulate in f16, and its divide is a reciprocal-multiply); bf16 arithmetic in
    # ml_dtypes rounds every step, which XLA's bf16 ops already do
    wide = ctx.convert(e, "f32") if x.dtype == "f16" else e
    s = ctx.convert(ctx.op("reduce_sum", wide, axes=axes, keepdims=True), x.dtype)
    s = ctx.op("select", ctx.op("eq", s, ctx.scalar(0, x)), ctx.scalar(1, x), s)
    return ctx.convert(ctx.op("div", wide, ctx.convert(s, wide.dtype)), x.dtype)


def _allowed_to_bias(ctx, allowed, dtype):
    return ctx.op("select", allowed, ctx.scalar(0, dtype), ctx.scalar(NEG_INF, dtype))


def position_bias(ctx, q_len: int, kv_len: int, offset, dtype, *, causal: bool, left: int, right: int):
    """The additive causal / sliding-window bias: query i (absolute position i + offset) may
    see key j iff j <= i + offset (causal) and within the window. ``offset`` is an int or a
    [B] vector (then the bias is [B, 1, q, kv])."""
    i = ctx.op("iota", dtype="i32", shape=(q_len, kv_len), axis=0)
    j = ctx.op("iota", dtype="i32", shape=(q_len, kv_len), axis=1)
    d = ctx.op("sub", i, j)
    if isinstance(offset, int):
        if offset:
            d = ctx.op("add", d, ctx.scalar(offset, "i32"))
    else:
        d = ctx.op("add", d, ctx.reshape(ctx.convert(offset, "i32"), (offset.shape[0], 1, 1)))
    conds = []
    if causal:
        conds.append(ctx.op("ge", d, ctx.scalar(0, "i32")))
    if left >= 0:
        conds.append(ctx.op("le", d, ctx.scalar(left, "i32")))
    if right >= 0:
        conds.append(ctx.op("ge", d, ctx.scalar(-right, "i32")))
    allowed = conds[0]
    for c in conds[1:]:
        allowed = ctx.op("and", allowed, c)
    bias = _allowed_to_bias(ctx, allowed, dtype)
    if bias.type.rank == 3:
        bias = ctx.reshape(bias, (bias.shape[0], 1, q_len, kv_len))
    return bias


def _mask_bias(ctx, mask, kv_len, dtype):
    """An attn_mask as an additive bias padded to ``kv_len`` keys (bool: False -> -inf)."""
    pad = kv_len - mask.shape[-1] if isinstance(mask.shape[-1], int) and isinstance(kv_len, int) else 0
    if pad > 0:
        fill = ctx.scalar(False, "bool") if mask.dtype == "bool" else ctx.scalar(NEG_INF, mask.dtype)
        rank = mask.type.rank
        mask = ctx.op("pad", mask, fill, low=(0,) * rank, high=(0,) * (rank - 1) + (pad,))
    if mask.dtype == "bool":
        return _allowed_to_bias(ctx, mask, dtype)
    return ctx.convert(mask, dtype)


def _add_all(ctx, terms):
    out = terms[0]
    for t in terms[1:]:
        out = ctx.op("add", out, t)
    return out


# --- Attention -----------------------------------------------------------------------------------
def attention(ctx, q, k, v, mask=None, past_k=None, past_v=None, nonpad=None):
    """Outputs (Y, present_key, present_value, qk_matmul_output) of ONNX Attention."""
    rank3 = q.type.rank == 3
    if rank3:
        qh, kvh = ctx.attr("q_num_heads", None), ctx.attr("kv_num_heads", None)
        if not qh or not kvh:
            ctx.unsupported("3-D inputs need q_num_heads and kv_num_heads")
        q, k, v = split_heads(ctx, q, qh), split_heads(ctx, k, kvh), split_heads(ctx, v, kvh)
    elif q.type.rank != 4:
        ctx.unsupported(f"Q must be 3-D or 4-D, got {q.type}")
    dtype = q.dtype
    scale = ctx.attr("scale", None)
    if scale is None:
        d = q.shape[3]
        if not isinstance(d, int):
            ctx.unsupported("default scale needs a static head size")
        scale = 1 / np.sqrt(d)
    # the reference scales Q and K by sqrt(scale) each, rounded to Q's type
    s = ctx.scalar(np.sqrt(np.float64(scale)), dtype)
    q = ctx.op("mul", q, s)
    if past_k is not None:
        k = ctx.op("concatenate", past_k, k, axis=2)
    if past_v is not None:
        v = ctx.op("concatenate", past_v, v, axis=2)
    present_k, present_v = k, v
    q_len, kv_len = q.shape[2], k.shape[2]

    is_causal = bool(ctx.attr("is_causal", 0))
    left, right = ctx.attr("left_window_size", -1), ctx.attr("right_window_size", -1)
    if past_k is not None:
        offset = past_k.shape[2]
    elif nonpad is not None:
        offset = ctx.op("sub", ctx.convert(nonpad, "i32"), ctx.scalar(q_len, "i32"))
    else:
        offset = 0
    if (is_causal or left >= 0 or right >= 0) and not (isinstance(q_len, int) and isinstance(kv_len, int)):
        ctx.unsupported("causal or windowed attention needs static sequence lengths")
    terms = []
    if mask is not None:
        terms.append(_mask_bias(ctx, mask, kv_len, dtype))
    if is_causal or left >= 0 or right >= 0:
        terms.append(position_bias(ctx, q_len, kv_len, offset, dtype, causal=is_causal,
                                   left=left, right=right))
    if nonpad is not None:
        j = ctx.op("iota", dtype="i32", shape=(1, kv_len), axis=1)
        keep = ctx.op("lt", j, ctx.reshape(ctx.convert(nonpad, "i32"), (nonpad.shape[0], 1)))
        terms.append(ctx.reshape(_allowed_to_bias(ctx, keep, dtype), (nonpad.shape[0], 1, 1, kv_len)))
    bias = _add_all(ctx, terms) if terms else None

    hq, hk = q.shape[1], k.shape[1]
    if isinstance(hq, int) and isinstance(hk, int) and hq != hk:
        if hq % hk:
            ctx.unsupported(f"{hq} query heads are not a multiple of {hk} key/value heads")
        k, v = repeat_heads(ctx, k, hq // hk), repeat_heads(ctx, v, hq // hk)
    k = ctx.op("mul", k, s)
    qk = ctx.op("dot_general", q, k, contracting_dims=((3,), (3,)), batch_dims=((0, 1), (0, 1)))
    softcap = ctx.attr("softcap", 0.0)
    if softcap and softcap > 0:
        c = ctx.scalar(softcap, qk)
        qk = ctx.op("mul", ctx.op("tanh", ctx.op("div", qk, c)), c)
    scores = qk if bias is None else ctx.op("add", qk, bias)
    mode = ctx.attr("qk_matmul_output_mode", 0)
    precision = ctx.attr("softmax_precision", None)
    logits = scores if precision is None else ctx.convert(scores, ir_dtype(precision, "softmax_precision"))
    if bias is None and logits.dtype != "f16":
        probs = ctx.op("softmax", logits, axis=-1)
    else:
        probs = safe_softmax(ctx, logits)
    if bias is not None:
        # rows the bias masks entirely see no key: zeros, decided on the bias (not on logits)
        rows = ctx.op("reduce_max", bias, axes=(bias.type.rank - 1,), keepdims=True)
        dead = ctx.op("eq", rows, ctx.scalar(NEG_INF, bias))
        probs = ctx.op("select", ctx.broadcast_to(dead, probs.shape), ctx.scalar(0, probs), probs)
    qk_out = None
    if ctx.output_used(3):
        qk_out = {2: scores, 3: probs}.get(mode, qk)
        qk_out = ctx.convert(ctx.broadcast_to(qk_out, probs.shape), dtype)
    probs = ctx.convert(probs, dtype)
    y = ctx.op("dot_general", probs, v, contracting_dims=((3,), (2,)), batch_dims=((0, 1), (0, 1)))
    if rank3:
        y = merge_heads(ctx, y)
    return y, present_k, present_v, qk_out


@onnx_op("Attention", since=23)
def _attention(ctx, q, k, v, mask=None, past_k=None, past_v=None, nonpad=None):
    if (past_k is None) != (past_v is None):
        ctx.unsupported("past_key and past_value must be given together")
    outs = attention(ctx, q, k, v, mask, past_k, past_v, nonpad)
    return list(outs[:max(1, ctx.num_outputs)])


# --- rotary embedding, RMS normalization, SwiGLU ------------------------------------------------
@onnx_op("RotaryEmbedding", since=23)
def _rotary_embedding(ctx, x, cos, sin, position_ids=None):
    rank = x.type.rank
    if rank == 4:
        y = ctx.op("transpose", x, permutation=(0, 2, 1, 3))  # [B, S, H, D]
    elif rank == 3:
        n = ctx.attr("num_heads", 0)
        b, s, hidden = x.shape
        if not n or not isinstance(hidden, int) or hidden % n:
            ctx.unsupported(f"3-D input {x.type} needs num_heads dividing its hidden size")
        y = ctx.reshape(x, (b, s, n, hidden // n))
    else:
        ctx.unsupported(f"input must be 3-D or 4-D, got {x.type}")
    head = y.shape[3]
    rot = ctx.attr("rotary_embedding_dim", 0) or head
    if not isinstance(head, int) or rot % 2 or rot > head:
        ctx.unsupported(f"rotary_embedding_dim {rot} does not fit head size {head}")
    if position_ids is not None:
        cos = ctx.op("take", cos, position_ids, axis=0)
        sin = ctx.op("take", sin, position_ids, axis=0)
    cos = ctx.op("expand_dims", ctx.convert(cos, y.dtype), axes=(2,))
    sin = ctx.op("expand_dims", ctx.convert(sin, y.dtype), axes=(2,))
    x_rot = slice_axis(ctx, y, 3, 0, rot)
    interleaved = bool(ctx.attr("interleaved", 0))
    if interleaved:
        x1, x2 = slice_axis(ctx, x_rot, 3, 0, rot, 2), slice_axis(ctx, x_rot, 3, 1, rot, 2)
    else:
        x1, x2 = slice_axis(ctx, x_rot, 3, 0, rot // 2), slice_axis(ctx, x_rot, 3, rot // 2, rot)
    real = ctx.op("sub", ctx.op("mul", cos, x1), ctx.op("mul", sin, x2))
    imag = ctx.op("add", ctx.op("mul", sin, x1), ctx.op("mul", cos, x2))
    if interleaved:
        pair = ctx.op("concatenate", ctx.op("expand_dims", real, axes=(4,)),
                      ctx.op("expand_dims", imag, axes=(4,)), axis=4)
        rotated = ctx.reshape(pair, tuple(x_rot.shape))
    else:
        rotated = ctx.op("concatenate", real, imag, axis=3)
    if rot < head:
        rotated = ctx.op("concatenate", rotated, slice_axis(ctx, y, 3, rot, head), axis=3)
    if rank == 4:
        return ctx.op("transpose", rotated, permutation=(0, 2, 1, 3))
    return ctx.reshape(rotated, tuple(x.shape))


@onnx_op("RMSNormalization", since=23)
def _rms_normalization(ctx, x, scale):
    rank = x.type.rank
    axis = norm_axis(ctx.attr("axis", -1), rank)
    eps = ctx.attr("epsilon", 1e-5)
    stash = ir_dtype(ctx.attr("stash_type", 1), "stash_type")
    xs = ctx.convert(x, stash)
    axes = tuple(range(axis, rank))
    sq = ctx.op("reduce_sum", ctx.op("mul", xs, xs), axes=axes, keepdims=True)
    ms = ctx.op("div", sq, element_count(ctx, xs, axes, sq))
    inv = ctx.op("reciprocal", ctx.op("sqrt", ctx.op("add", ms, ctx.scalar(eps, ms))))
    y = ctx.convert(ctx.op("mul", xs, inv), x.dtype)
    return ctx.op("mul", y, ctx.convert(scale, x.dtype))


@onnx_op("SwiGLU", since=28)
def _swiglu(ctx, a, b):
    alpha = ctx.attr("alpha", 1.0)
    z = a if alpha == 1.0 else ctx.op("mul", a, ctx.scalar(alpha, a))
    return ctx.op("mul", ctx.op("mul", a, ctx.op("logistic", z)), ctx.convert(b, a.dtype))
