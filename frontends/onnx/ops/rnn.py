"""RNN, GRU and LSTM as ``scan`` nodes: the input projection for all steps is one
dot_general outside the loop; the scan body does the recurrent matmul and the gates."""
from __future__ import annotations

from dataclasses import dataclass

from ....ir import GraphBuilder, TensorType
from ..registry import onnx_op

_ACTIVATIONS = frozenset({"relu", "tanh", "sigmoid", "affine", "leakyrelu", "thresholdedrelu",
                          "scaledtanh", "hardsigmoid", "elu", "softsign", "softplus"})
_DEFAULT_ALPHA = {"leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0,
                  "hardsigmoid": 0.2, "elu": 1.0, "affine": 1.0}
_DEFAULT_BETA = {"scaledtanh": 1.0, "hardsigmoid": 0.5, "affine": 0.0}


class _Body:
    """A scan body under construction (its nodes stay out of the current scope)."""

    def __init__(self, ctx, name: str):
        self.b = GraphBuilder(name, namer=ctx.scope.namer, loc=ctx.loc)

    def input(self, t: TensorType):
        return self.b.input(t)

    def op(self, op, *xs, **attrs):
        return self.b.op(op, *xs, **attrs)

    def scalar(self, value, like):
        return self.b.constant(value, like.dtype)

    def slice_cols(self, x, k: int, size: int):
        """Columns [k*size, (k+1)*size) of a [B, n*size] value."""
        return self.op("slice", x, start=(0, k * size), limit=(x.shape[0], (k + 1) * size))

    def matmul_t(self, h, w):
        """h @ w.T for h [B, H], w [G, H]."""
        return self.op("dot_general", h, w, contracting_dims=((1,), (1,)))

    def activation(self, name: str, x, alpha, beta):
        key = name.lower()
        a = _DEFAULT_ALPHA.get(key, 0.0) if alpha is None else alpha
        b = _DEFAULT_BETA.get(key, 0.0) if beta is None else beta
        if key == "tanh":
            return self.op("tanh", x)
        if key == "sigmoid":
            return self.op("logistic", x)
        if key == "relu":
            return self.op("relu", x)
        if key == "leakyrelu":
            return self.op("leaky_relu", x, alpha=float(a))
        if key == "elu":
            return self.op("elu", x, alpha=float(a))
        if key == "softsign":
            return self.op("softsign", x)
        if key == "softplus":
            return self.op("softplus", x)
        if key == "affine":
            return self.op("add", self.op("mul", x, self.scalar(a, x)), self.scalar(b, x))
        if key == "scaledtanh":
            return self.op("mul", self.op("tanh", self.op("mul", x, self.scalar(b, x))), self.scalar(a, x))
        if key == "hardsigmoid":
            y = self.op("add", self.op("mul", x, self.scalar(a, x)), self.scalar(b, x))
            return self.op("min", self.op("max", y, self.scalar(0, x)), self.scalar(1, x))
        if key == "thresholdedrelu":
            return self.op("select", self.op("gt", x, self.scalar(a, x)), x, self.scalar(0, x))
        raise KeyError(name)


def _slice_dir(ctx, v, d: int):
    """``v[d]`` of a [dirs, ...] value."""
    start = (d,) + (0,) * (v.type.rank - 1)
    limit = (d + 1,) + tuple(v.shape[1:])
    return ctx.reshape(ctx.op("slice", v, start=start, limit=limit), tuple(v.shape[1:]))


def _stack(ctx, vals, axis: int):
    vals = [ctx.op("expand_dims", v, axes=(axis,)) for v in vals]
    return vals[0] if len(vals) == 1 else ctx.op("concatenate", *vals, axis=axis)


@dataclass(frozen=True)
class _Spec:
    """What differs between RNN, GRU and LSTM."""

    gates: int
    default_acts: tuple[str, ...]  # activations per direction
    has_cell: bool


RNN = _Spec(1, ("Tanh",), False)
GRU = _Spec(3, ("Sigmoid", "Tanh"), False)
LSTM = _Spec(4, ("Sigmoid", "Tanh", "Tanh"), True)


def _activations(ctx, spec: _Spec, d: int):
    """(name, alpha, beta) of direction ``d``'s activations (alpha/beta None: defaults)."""
    n = len(spec.default_acts)
    acts = ctx.attr("activations", spec.default_acts * 2)
    alphas, betas = ctx.attr("activation_alpha", ()), ctx.attr("activation_beta", ())
    out = []
    for k in range(d * n, (d + 1) * n):
        if k >= len(acts) or acts[k].lower() not in _ACTIVATIONS:
            ctx.unsupported(f"activation {acts[k] if k < len(acts) else '(missing)'!r} is not supported")
        out.append((acts[k], alphas[k] if k < len(alphas) else None, betas[k] if k < len(betas) else None))
    return out


def recurrent(ctx, spec: _Spec, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    """Outputs (Y, Y_h[, Y_c]) of an ONNX RNN/GRU/LSTM node."""
    direction = ctx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        ctx.unsupported(f"unknown direction {direction!r} (forward, reverse or bidirectional)")
    if ctx.attr("input_forget", 0):
        ctx.unsupported("input_forget=1 is not supported")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = ctx.attr("hidden_size", None) or r.shape[-1]
    layout = ctx.attr("layout", 0)
    if layout:
        x = ctx.op("transpose", x, permutation=(1, 0, 2))
        h0 = None if h0 is None else ctx.op("transpose", h0, permutation=(1, 0, 2))
        c0 = None if c0 is None else ctx.op("transpose", c0, permutation=(1, 0, 2))
    steps, batch, _ = x.shape
    clip = ctx.attr("clip", None)
    mask = None
    known_lens = ctx.known(seq_lens)
    if known_lens is not None and isinstance(steps, int) and (known_lens == steps).all():
        seq_lens = None  # every row runs the whole sequence
    if seq_lens is not None:  # [T, B, 1]: step t is inside row b's sequence
        t = ctx.op("iota", dtype="i32", shape=(steps, batch), axis=0)
        lens = ctx.op("broadcast_in_dim", ctx.convert(seq_lens, "i32"), shape=(steps, batch),
                      broadcast_dimensions=(1,))
        mask = ctx.op("expand_dims", ctx.op("lt", t, lens), axes=(2,))
    ys, hs, cs = [], [], []
    for d in range(dirs):
        act = _activations(ctx, spec, d)
        wd, rd = _slice_dir(ctx, w, d), _slice_dir(ctx, r, d)
        xw = ctx.op("dot_general", x, wd, contracting_dims=((2,), (1,)))  # [T, B, G*H]
        rb_h = None
        if b is not None:
            bd = _slice_dir(ctx, b, d)
            wb = ctx.op("slice", bd, start=(0,), limit=(spec.gates * hidden,))
            rb = ctx.op("slice", bd, start=(spec.gates * hidden,), limit=(2 * spec.gates * hidden,))
            if spec is GRU:  # the h gate's recurrent bias stays inside (reset gate applies to it)
                zr = ctx.op("slice", rb, start=(0,), limit=(2 * hidden,))
                rb_h = ctx.op("slice", rb, start=(2 * hidden,), limit=(3 * hidden,))
                zeros = ctx.op("constant", value=0, dtype=zr.dtype, shape=(hidden,))
                rb = ctx.op("concatenate", zr, zeros, axis=0)
            xw = ctx.op("add", xw, ctx.op("add", wb, rb))
        h_init = _slice_dir(ctx, h0, d) if h0 is not None else ctx.op(
            "constant", value=0, dtype=x.dtype, shape=(batch, hidden))
        carry = [h_init]
        if spec.has_cell:
            carry.append(_slice_dir(ctx, c0, d) if c0 is not None else ctx.op(
                "constant", value=0, dtype=x.dtype, shape=(batch, hidden)))
        invariants = [rd] + ([rb_h] if rb_h is not None else []) + (
            [_slice_dir(ctx, p, d)] if spec.has_cell and p is not None else [])
        xs = [xw] + ([mask] if mask is not None else [])
        region = _step_region(ctx, spec, carry, xs, invariants, hidden, act, clip,
                              has_rb_h=rb_h is not None, has_p=spec.has_cell and p is not None,
                              linear_before_reset=bool(ctx.attr("linear_before_reset", 0)))
        outs = ctx.op("scan", *carry, *xs, *invariants, regions=[region], num_carry=len(carry),
                      num_xs=len(xs), length=steps, reverse=(direction == "reverse" or d == 1))
        hs.append(outs[0])
        if spec.has_cell:
            cs.append(outs[1])
        ys.append(outs[-1])
    y = _stack(ctx, ys, 1)  # [T, dirs, B, H]
    y_h = _stack(ctx, hs, 0)
    y_c = _stack(ctx, cs, 0) if cs else None
    if layout:
        y = ctx.op("transpose", y, permutation=(2, 0, 1, 3))
        y_h = ctx.op("transpose", y_h, permutation=(1, 0, 2))
        y_c = None if y_c is None else ctx.op("transpose", y_c, permutation=(1, 0, 2))
    return [y, y_h] + ([y_c] if spec.has_cell else [])


def _step_region(ctx, spec, carry, xs, invariants, hidden, act, clip, *, has_rb_h, has_p,
                 linear_before_reset):
    s = _Body(ctx, {1: "rnn_step", 3: "gru_step", 4: "lstm_step"}[spec.gates])
    h = s.input(carry[0].type)
    c = s.input(carry[1].type) if spec.has_cell else None
    xw = s.input(xs[0].type.with_shape(xs[0].shape[1:]))
    m = s.input(xs[1].type.with_shape(xs[1].shape[1:])) if len(xs) > 1 else None
    rd = s.input(invariants[0].type)
    rb_h = s.input(invariants[1].type) if has_rb_h else None
    p = s.input(invariants[-1].type) if has_p else None

    def clipped(v):
        if clip is None:
            return v
        return s.op("min", s.op("max", v, s.scalar(-clip, v)), s.scalar(clip, v))

    def f(k, v):
        name, alpha, beta = act[k]
        return s.activation(name, clipped(v), alpha, beta)

    if spec.gates == 1:
        h_new = f(0, s.op("add", xw, s.matmul_t(h, rd)))
        c_new = None
    elif spec.gates == 3:
        r_zr = s.op("slice", rd, start=(0, 0), limit=(2 * hidden, hidden))
        r_h = s.op("slice", rd, start=(2 * hidden, 0), limit=(3 * hidden, hidden))
        xzr = s.op("slice", xw, start=(0, 0), limit=(xw.shape[0], 2 * hidden))
        zr = s.op("add", xzr, s.matmul_t(h, r_zr))
        z = f(0, s.slice_cols(zr, 0, hidden))
        rr = f(0, s.slice_cols(zr, 1, hidden))
        xh = s.slice_cols(xw, 2, hidden)
        if linear_before_reset:
            rec = s.matmul_t(h, r_h)
            if rb_h is not None:
                rec = s.op("add", rec, rb_h)
            pre = s.op("add", xh, s.op("mul", rr, rec))
        else:
            pre = s.op("add", xh, s.matmul_t(s.op("mul", rr, h), r_h))
            if rb_h is not None:
                pre = s.op("add", pre, rb_h)
        cand = f(1, pre)
        one = s.scalar(1, h)
        h_new = s.op("add", s.op("mul", s.op("sub", one, z), cand), s.op("mul", z, h))
        c_new = None
    else:
        gates = s.op("add", xw, s.matmul_t(h, rd))
        gi, go, gf, gc = (s.slice_cols(gates, k, hidden) for k in range(4))
        if p is not None:
            pi, po, pf = (s.op("slice", p, start=(k * hidden,), limit=((k + 1) * hidden,))
                          for k in range(3))
            gi = s.op("add", gi, s.op("mul", pi, c))
            gf = s.op("add", gf, s.op("mul", pf, c))
        i, fg, g = f(0, gi), f(0, gf), f(1, gc)
        c_new = s.op("add", s.op("mul", fg, c), s.op("mul", i, g))
        if p is not None:
            go = s.op("add", go, s.op("mul", po, c_new))
        h_new = s.op("mul", f(0, go), f(2, c_new))
    y = h_new
    if m is not None:  # steps past a row's sequence length keep the state and output zeros
        mh = s.op("broadcast_in_dim", m, shape=tuple(h.shape), broadcast_dimensions=(0, 1))
        y = s.op("select", mh, h_new, s.scalar(0, h))
        h_new = s.op("select", mh, h_new, h)
        if c_new is not None:
            c_new = s.op("select", mh, c_new, c)
    outs = [h_new] + ([c_new] if c_new is not None else []) + [y]
    return s.b.build(outs)


@onnx_op("RNN", since=7)
def _rnn(ctx, x, w, r, b=None, seq_lens=None, h0=None):
    return recurrent(ctx, RNN, x, w, r, b, seq_lens, h0)[:max(1, ctx.num_outputs)]


@onnx_op("GRU", since=7)
def _gru(ctx, x, w, r, b=None, seq_lens=None, h0=None):
    return recurrent(ctx, GRU, x, w, r, b, seq_lens, h0)[:max(1, ctx.num_outputs)]


@onnx_op("LSTM", since=7)
def _lstm(ctx, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    return recurrent(ctx, LSTM, x, w, r, b, seq_lens, h0, c0, p)[:max(1, ctx.num_outputs)]
