"""Spectral ops: the discrete Fourier transform along one axis."""
from __future__ import annotations

import math

from ..registry import AttrSpec, define_op
from ..types import COMPLEX_DTYPES, is_float
from ._rules import norm_axis, require

_COMPLEX_OF = {"f64": "c128"}  # other real types transform in complex64
_REAL_OF = {"c64": "f32", "c128": "f64"}


def _fft(types, attrs):
    (x,) = types
    kind, n = attrs["kind"], attrs["length"]
    axis = norm_axis(attrs["axis"], x.rank)
    require(kind in ("fft", "ifft", "rfft", "irfft"),
            f"fft: kind must be fft, ifft, rfft or irfft, got {kind!r}")
    require(n >= 1, f"fft: length must be positive, got {n}")
    shape = list(x.shape)
    if kind == "rfft":
        require(is_float(x.dtype), f"fft: rfft takes real floats, got {x}")
        shape[axis] = n // 2 + 1
        return [x.with_shape(shape).with_dtype(_COMPLEX_OF.get(x.dtype, "c64"))]
    require(x.dtype in COMPLEX_DTYPES, f"fft: {kind} takes complex numbers, got {x}")
    shape[axis] = n
    if kind == "irfft":
        return [x.with_shape(shape).with_dtype(_REAL_OF[x.dtype])]
    return [x.with_shape(shape)]


def _fft_flops(ins, outs, attrs, symbols):
    n = attrs["length"]
    return int(5 * outs[0].numel(symbols) * max(1.0, math.log2(max(n, 2))))


define_op("fft", _fft, flops=_fft_flops,
          attrs=[AttrSpec("kind", "str", doc="fft | ifft | rfft (real input, one-sided output) | "
                          "irfft (one-sided input, real output)"),
                 AttrSpec("axis", "int"),
                 AttrSpec("length", "int", doc="transform length: the input is cut or zero-padded")],
          doc="Discrete Fourier transform along one axis (numpy.fft conventions: ifft scales "
              "by 1/length).")
