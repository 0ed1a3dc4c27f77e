"""digits-cnn: a small convolutional classifier for the 8x8 scikit-learn digits."""

from __future__ import annotations

from typing import Any, Mapping

import jax

BN_EPS = 1e-5

Params = Mapping[str, Any]


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int) -> jax.Array:
    """3x3 SAME convolution over NHWC input with an HWIO kernel, plus bias."""
    y = jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + bias


def batch_norm(x: jax.Array, p: Params) -> jax.Array:
    """Inference batch-norm using the stored population mean and variance."""
    return (x - p["mean"]) * (p["scale"] * jax.lax.rsqrt(p["var"] + BN_EPS)) + p["bias"]


def head(x: jax.Array, p: Params) -> jax.Array:
    """Flatten the (N, 4, 4, 32) feature map and apply the two dense layers."""
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return x @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def apply(params: Params, x: jax.Array) -> jax.Array:
    """Map (N, 8, 8, 1) float32 images in [0, 1] to (N, 10) logits."""
    p = params["params"]
    x = conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], stride=1)
    x = jax.nn.relu(batch_norm(x, p["BatchNorm_0"]))
    x = conv(x, p["Conv_1"]["kernel"], p["Conv_1"]["bias"], stride=2)
    x = jax.nn.relu(batch_norm(x, p["BatchNorm_1"]))
    return head(x, p)
