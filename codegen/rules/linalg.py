"""Lowering of dense linear algebra (det)."""
from __future__ import annotations

import jax.numpy as jnp

from ..lowering import lowering


@lowering("det")
def _det(ctx, node, x):
    if x.dtype.itemsize < 4:  # LU has no half-precision kernel: factor in f32
        return jnp.linalg.det(x.astype(jnp.float32)).astype(x.dtype)
    return jnp.linalg.det(x)
