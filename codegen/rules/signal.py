"""Lowering of the discrete Fourier transform."""
from __future__ import annotations

import jax.numpy as jnp

from ..lowering import lowering

_FFT = {"fft": jnp.fft.fft, "ifft": jnp.fft.ifft, "rfft": jnp.fft.rfft, "irfft": jnp.fft.irfft}


@lowering("fft")
def _fft(ctx, node, x):
    a = node.attrs
    if a["kind"] == "rfft" and x.dtype.itemsize < 4:  # no half-precision FFT kernel
        x = x.astype(jnp.float32)
    return _FFT[a["kind"]](x, n=a["length"], axis=a["axis"])
