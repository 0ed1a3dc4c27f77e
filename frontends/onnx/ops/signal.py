"""Signal processing: DFT, STFT (as frames + DFT) and MelWeightMatrix (computed at import).

ONNX stores complex signals as a trailing dim of 2 (real, imaginary); a trailing dim of 1
is a real signal. The IR's ``fft`` works on complex element types, so converters pack and
unpack around it.
"""
from __future__ import annotations

import numpy as np

from .. import folding
from ..registry import onnx_op
from ._util import norm_axis


def _work_dtype(dtype: str) -> str:
    return "f64" if dtype == "f64" else "f32"


def to_complex(ctx, x):
    """[..., 1|2] real representation -> (signal [...], is_complex) in f32/f64 or c64/c128."""
    real_t = _work_dtype(x.dtype)
    last = x.shape[-1]
    if last not in (1, 2):
        ctx.unsupported(f"the signal's last dim must be 1 (real) or 2 (complex), got {x.type}")
    re = ctx.convert(_last(ctx, x, 0), real_t)
    if last == 1:
        return re, False
    ctype = "c128" if real_t == "f64" else "c64"
    im = ctx.convert(_last(ctx, x, 1), ctype)
    i = ctx.const(np.asarray(1j, dtype=np.complex128 if ctype == "c128" else np.complex64))
    return ctx.op("add", ctx.convert(re, ctype), ctx.op("mul", im, i)), True


def _last(ctx, x, k: int):
    rank = x.type.rank
    start = (0,) * (rank - 1) + (k,)
    limit = tuple(x.shape[:-1]) + (k + 1,)
    return ctx.reshape(ctx.op("slice", x, start=start, limit=limit), tuple(x.shape[:-1]))


def from_complex(ctx, c, dtype: str):
    """A complex signal [...] -> [..., 2] (real, imaginary) of ``dtype``."""
    parts = [ctx.op("expand_dims", ctx.op(p, c), axes=(c.type.rank,)) for p in ("real", "imag")]
    return ctx.convert(ctx.op("concatenate", *parts, axis=c.type.rank), dtype)


def dft(ctx, x, axis: int, length: int | None, inverse: bool, onesided: bool):
    """ONNX DFT of the real representation ``x`` along ``axis`` (an axis of the signal)."""
    signal, is_complex = to_complex(ctx, x)
    n_in = signal.shape[axis]
    if length is None:
        length = 2 * (n_in - 1) if inverse and onesided else n_in
    if not isinstance(length, int):
        ctx.unsupported("the transform length must be static")
    if inverse and onesided:
        if not is_complex:
            signal = ctx.convert(signal, "c128" if signal.dtype == "f64" else "c64")
        y = ctx.op("fft", signal, kind="irfft", axis=axis, length=length)
        return ctx.convert(ctx.op("expand_dims", y, axes=(y.type.rank,)), x.dtype)
    if inverse:
        if not is_complex:
            signal = ctx.convert(signal, "c128" if signal.dtype == "f64" else "c64")
        return from_complex(ctx, ctx.op("fft", signal, kind="ifft", axis=axis, length=length), x.dtype)
    if onesided and not is_complex:
        return from_complex(ctx, ctx.op("fft", signal, kind="rfft", axis=axis, length=length), x.dtype)
    if not is_complex:
        # a real signal's spectrum is Hermitian: the rfft half plus the mirrored conjugates,
        # which keeps the imaginary parts that must be zero exactly zero
        half = ctx.op("fft", signal, kind="rfft", axis=axis, length=length)
        y = half
        if length > 2:
            rank = half.type.rank
            start, limit = [0] * rank, list(half.shape)
            start[axis], limit[axis] = 1, length - length // 2
            mirror = ctx.op("rev", ctx.op("slice", half, start=tuple(start), limit=tuple(limit)),
                            axes=(axis,))
            twice_re = ctx.convert(ctx.op("mul", ctx.op("real", mirror), ctx.scalar(2, signal)), mirror.dtype)
            y = ctx.op("concatenate", half, ctx.op("sub", twice_re, mirror), axis=axis)  # conj
    else:
        y = ctx.op("fft", signal, kind="fft", axis=axis, length=length)
    if onesided:
        rank = y.type.rank
        limit = list(y.shape)
        limit[axis] = length // 2 + 1
        y = ctx.op("slice", y, start=(0,) * rank, limit=tuple(limit))
    return from_complex(ctx, y, x.dtype)


def _scalar_int(ctx, v, what: str) -> int:
    return int(np.asarray(ctx.require_known(v, what)).reshape(-1)[0])


def _dft_axis(ctx, x, axis: int) -> int:
    a = norm_axis(axis, x.type.rank)
    if a == x.type.rank - 1:
        ctx.unsupported("axis names the real/imaginary dim")
    return a


@onnx_op("DFT", since=17)
def _dft_17(ctx, x, dft_length=None):
    n = None if dft_length is None else _scalar_int(ctx, dft_length, "dft_length")
    return dft(ctx, x, _dft_axis(ctx, x, ctx.attr("axis", 1)), n, bool(ctx.attr("inverse", 0)),
               bool(ctx.attr("onesided", 0)))


@onnx_op("DFT", since=20)
def _dft_20(ctx, x, dft_length=None, axis=None):
    n = None if dft_length is None else _scalar_int(ctx, dft_length, "dft_length")
    a = -2 if axis is None else _scalar_int(ctx, axis, "axis")
    return dft(ctx, x, _dft_axis(ctx, x, a), n, bool(ctx.attr("inverse", 0)),
               bool(ctx.attr("onesided", 0)))


@onnx_op("STFT", since=17)
def _stft(ctx, x, frame_step, window=None, frame_length=None):
    step = _scalar_int(ctx, frame_step, "frame_step")
    if x.type.rank != 3:
        ctx.unsupported(f"signal must be [batch, length, 1|2], got {x.type}")
    length = x.shape[1]
    if frame_length is not None:
        n = _scalar_int(ctx, frame_length, "frame_length")
    elif window is not None:
        n = window.shape[0]
    else:
        n = length
    size = window.shape[0] if window is not None else n  # samples per frame
    if not all(isinstance(d, int) for d in (n, size)):
        ctx.unsupported(f"STFT needs static frame and window lengths, got {n} and {size}")
    if step < 1:
        ctx.unsupported(f"STFT frame_step must be positive, got {step}")
    frames = 1 + (length - n) // step
    # frame f holds samples f*step .. f*step+size-1 (zeros past the end)
    x = ctx.op("pad", x, ctx.scalar(0, x), low=(0, 0, 0), high=(0, size, 0))
    if isinstance(frames, int):
        idx = ctx.const((np.arange(frames)[:, None] * step + np.arange(size)[None, :]).astype(np.int32))
    else:  # a symbolic frame count: the same indices from iota
        rows = ctx.op("iota", dtype="i32", shape=(frames, size), axis=0)
        idx = ctx.op("add", ctx.op("mul", rows, ctx.scalar(step, "i32")),
                     ctx.op("iota", dtype="i32", shape=(frames, size), axis=1))
    framed = ctx.op("take", x, idx, axis=1)  # [B, F, size, 1|2]
    if window is not None:
        w = ctx.reshape(ctx.convert(window, x.dtype), (1, 1, size, 1))
        framed = ctx.op("mul", framed, w)
    return dft(ctx, framed, 2, n, False, bool(ctx.attr("onesided", 1)))


@onnx_op("MelWeightMatrix", since=17)
def _mel_weight_matrix(ctx, *inputs):
    values = [ctx.require_known(v, f"input {i}") for i, v in enumerate(inputs)]
    out = folding.evaluate(ctx.node, ctx.opset, values)
    if out is None:
        ctx.unsupported("the reference implementation could not evaluate it")
    return ctx.const(out[0])
