"""Optimizer update ops of the ai.onnx.preview.training domain (Adagrad, Adam, Momentum)."""
from __future__ import annotations

from ..registry import onnx_op

_TRAINING = "ai.onnx.preview.training"


def _groups(inputs, k: int):
    """Split R, T, then k lists of n tensors each."""
    r, t, rest = inputs[0], inputs[1], list(inputs[2:])
    n = len(rest) // k
    return r, t, [rest[i * n:(i + 1) * n] for i in range(k)]


def _regularized(ctx, x, g, norm_coefficient):
    return ctx.op("add", ctx.op("mul", ctx.scalar(norm_coefficient, x), x), g)


@onnx_op("Adagrad", domain=_TRAINING)
def _adagrad(ctx, *inputs):
    decay, eps = ctx.attr("decay_factor", 0.0), ctx.attr("epsilon", 0.0)
    norm = ctx.attr("norm_coefficient", 0.0)
    r, t, (xs, gs, hs) = _groups(inputs, 3)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        rr = ctx.op("div", ctx.convert(r, x.dtype), ctx.op(
            "add", ctx.scalar(1, x), ctx.op("mul", ctx.convert(t, x.dtype), ctx.scalar(decay, x))))
        gr = _regularized(ctx, x, g, norm)
        h2 = ctx.op("add", h, ctx.op("mul", gr, gr))
        hs_ = ctx.op("add", ctx.op("sqrt", h2), ctx.scalar(eps, x))
        new_x.append(ctx.op("sub", x, ctx.op("div", ctx.op("mul", rr, gr), hs_)))
        new_h.append(h2)
    return new_x + new_h


@onnx_op("Momentum", domain=_TRAINING)
def _momentum(ctx, *inputs):
    alpha, beta = ctx.attr("alpha"), ctx.attr("beta")
    norm, mode = ctx.attr("norm_coefficient"), ctx.attr("mode")
    r, t, (xs, gs, vs) = _groups(inputs, 3)
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        gr = _regularized(ctx, x, g, norm)
        first = ctx.op("gt", t, ctx.scalar(0, t))
        b = ctx.op("select", first, ctx.scalar(beta, x), ctx.scalar(1, x))
        v2 = ctx.op("add", ctx.op("mul", ctx.scalar(alpha, x), v), ctx.op("mul", b, gr))
        step = v2 if mode == "standard" else ctx.op("add", gr, ctx.op("mul", ctx.scalar(alpha, x), v2))
        new_x.append(ctx.op("sub", x, ctx.op("mul", ctx.convert(r, x.dtype), step)))
        new_v.append(v2)
    return new_x + new_v


@onnx_op("Adam", domain=_TRAINING)
def _adam(ctx, *inputs):
    alpha, beta = ctx.attr("alpha", 0.9), ctx.attr("beta", 0.999)
    eps, norm = ctx.attr("epsilon", 0.0), ctx.attr("norm_coefficient", 0.0)
    post = ctx.attr("norm_coefficient_post", 0.0)
    r, t, (xs, gs, vs, hs) = _groups(inputs, 4)
    outs = ([], [], [])
    for x, g, v, h in zip(xs, gs, vs, hs):
        one = ctx.scalar(1, x)
        gr = _regularized(ctx, x, g, norm)
        v2 = ctx.op("add", ctx.op("mul", ctx.scalar(alpha, x), v), ctx.op("mul", ctx.scalar(1 - alpha, x), gr))
        h2 = ctx.op("add", ctx.op("mul", ctx.scalar(beta, x), h),
                    ctx.op("mul", ctx.scalar(1 - beta, x), ctx.op("mul", gr, gr)))
        hsq = ctx.op("add", ctx.op("sqrt", h2), ctx.scalar(eps, x))
        tf, rf = ctx.convert(t, x.dtype), ctx.convert(r, x.dtype)
        corr = ctx.op("div", ctx.op("sqrt", ctx.op("sub", one, ctx.op("pow", ctx.scalar(beta, x), tf))),
                      ctx.op("sub", one, ctx.op("pow", ctx.scalar(alpha, x), tf)))
        radj = ctx.op("select", ctx.op("gt", t, ctx.scalar(0, t)), ctx.op("mul", rf, corr), rf)
        x2 = ctx.op("sub", x, ctx.op("mul", radj, ctx.op("div", v2, hsq)))
        outs[0].append(ctx.op("mul", ctx.scalar(1 - post, x), x2))
        outs[1].append(v2)
        outs[2].append(h2)
    return outs[0] + outs[1] + outs[2]
