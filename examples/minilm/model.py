"""all-MiniLM-L6-v2 as a JAX function: BERT encoder (6 layers, 12 heads), mean pooling, L2 norm."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

HIDDEN = 384
NUM_LAYERS = 6
NUM_HEADS = 12
HEAD_DIM = HIDDEN // NUM_HEADS
FFN = 1536
LN_EPS = 1e-12
MAX_LENGTH = 256          # sentence-transformers' max_seq_length for this model

Params = Mapping[str, Any]


def layer_norm(x, p: Params):
    """LayerNorm over the last axis (BERT's eps)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * p["scale"] + p["bias"]


def dense(x, p: Params):
    return x @ p["kernel"] + p["bias"]


def attention(x, bias, p: Params):
    """Multi-head self-attention; ``bias`` (B, 1, 1, S) is 0 on tokens and -large on padding."""
    b, s, _ = x.shape

    def heads(t):  # (B, S, H*D) -> (B, H, S, D)
        return t.reshape(b, s, NUM_HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q, k, v = heads(dense(x, p["query"])), heads(dense(x, p["key"])), heads(dense(x, p["value"]))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.float32(np.sqrt(HEAD_DIM)) + bias
    probs = jax.nn.softmax(scores, axis=-1)
    ctx = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b, s, NUM_HEADS * HEAD_DIM)
    return dense(ctx, p["output"])


def encoder_layer(x, bias, p: Params):
    """Post-LN BERT layer: attention + residual + LN, gelu FFN + residual + LN."""
    x = layer_norm(x + attention(x, bias, p["attention"]), p["attention_ln"])
    h = jax.nn.gelu(dense(x, p["intermediate"]), approximate=False)
    return layer_norm(x + dense(h, p["output"]), p["output_ln"])


def embed(params: Params, input_ids, attention_mask):
    """Token embeddings (B, S, 384) after all layers, before pooling."""
    e = params["embeddings"]
    s = input_ids.shape[1]
    # positions by take, not e["position"][:s]: with a symbolic length that slice is
    # min(512, S) long, which does not broadcast against S
    pos = jnp.take(e["position"], jnp.arange(s, dtype=input_ids.dtype), axis=0)
    x = jnp.take(e["word"], input_ids, axis=0) + pos + e["token_type"][0]
    x = layer_norm(x, e["ln"])
    mask = attention_mask.astype(x.dtype)
    bias = ((1.0 - mask) * np.float32(np.finfo(np.float32).min))[:, None, None, :]
    for layer in params["layers"]:
        x = encoder_layer(x, bias, layer)
    return x


def minilm(params: Params, input_ids, attention_mask):
    """(B, S) token ids and attention mask -> (B, 384) unit-norm sentence embeddings."""
    x = embed(params, input_ids, attention_mask)
    mask = attention_mask.astype(x.dtype)[:, :, None]
    pooled = jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
    norm = jnp.sqrt(jnp.sum(jnp.square(pooled), axis=-1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


def params_from_safetensors(tensors: Mapping[str, np.ndarray]) -> dict:
    """The nested params of ``minilm`` from the Hugging Face BertModel tensors (kernels
    transposed to (in, out))."""
    def lin(prefix):
        return {"kernel": np.ascontiguousarray(tensors[prefix + ".weight"].T.astype(np.float32)),
                "bias": tensors[prefix + ".bias"].astype(np.float32)}

    def ln(prefix):
        return {"scale": tensors[prefix + ".weight"].astype(np.float32),
                "bias": tensors[prefix + ".bias"].astype(np.float32)}

    layers = []
    for i in range(NUM_LAYERS):
        pre = f"encoder.layer.{i}."
        layers.append({
            "attention": {"query": lin(pre + "attention.self.query"),
                          "key": lin(pre + "attention.self.key"),
                          "value": lin(pre + "attention.self.value"),
                          "output": lin(pre + "attention.output.dense")},
            "attention_ln": ln(pre + "attention.output.LayerNorm"),
            "intermediate": lin(pre + "intermediate.dense"),
            "output": lin(pre + "output.dense"),
            "output_ln": ln(pre + "output.LayerNorm"),
        })
    return {"embeddings": {"word": tensors["embeddings.word_embeddings.weight"].astype(np.float32),
                           "position": tensors["embeddings.position_embeddings.weight"].astype(np.float32),
                           "token_type": tensors["embeddings.token_type_embeddings.weight"].astype(np.float32),
                           "ln": ln("embeddings.LayerNorm")},
            "layers": layers}
