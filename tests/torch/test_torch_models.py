"""Whole torch models against torch eager: ResNet-18, MobileNetV2, an LSTM tagger and the real
all-MiniLM-L6-v2 (pretrained, offline) with a dynamic sequence length.

Each model is compiled once with symbolic dims and called at several shapes; the error is
measured against the module's own eval-mode output (max abs and max relative error).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import tensorsmith

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402

Dim = torch.export.Dim
warnings.filterwarnings("ignore", category=FutureWarning)


def errors(out, ref) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|) in float64."""
    o, r = np.asarray(out, np.float64), ref.detach().double().numpy()
    err = float(np.max(np.abs(o - r)))
    return err, err / float(np.max(np.abs(r)))


def eager(module, *args):
    with torch.no_grad():
        return module.eval()(*args)


def check_vision(model, size, batches, passes, tol=1e-4):
    torch.manual_seed(0)
    model = tm.randomize_bn(model)
    x = torch.randn(2, 3, size, size)
    cm = tensorsmith.compile(model, x, passes=passes, dynamic_shapes=({0: Dim("batch", max=16)},))
    assert set(cm.source.params) == set(model.state_dict())  # the names configuration uses
    assert str(cm.source.inputs[0].type) == f"f32[batch,3,{size},{size}]"
    for b in batches:
        x = torch.randn(b, 3, size, size)
        abs_err, rel_err = errors(cm(x.numpy()), eager(model, x))
        print(f"{type(model).__name__} batch {b}: max abs {abs_err:.2e}, rel {rel_err:.2e}")
        assert rel_err < tol, (b, abs_err, rel_err)
    return cm


def test_resnet18_with_batchnorm_folded_and_fused():
    cm = check_vision(tm.ResNet18(num_classes=100), 32, (1, 3), "default,fold-batchnorm,fuse")
    ops = {n.op for n in cm.graph.nodes}
    assert "batch_norm" not in ops and "composite" in ops
    assert any(n.attrs.get("name", "").startswith("fused.conv") for n in cm.graph.nodes)


@pytest.mark.slow
def test_mobilenet_v2():
    cm = check_vision(tm.MobileNetV2(), 64, (1, 4), "default,fold-batchnorm")
    assert not any(n.op == "batch_norm" for n in cm.graph.nodes)


@pytest.mark.slow
def test_lstm_tagger_dynamic_batch():
    torch.manual_seed(0)
    model = tm.LSTMTagger()
    tokens = torch.randint(0, 100, (2, 9))
    # the LSTM is unrolled over time by torch.export: the sequence length is static
    cm = tensorsmith.compile(model, tokens, dynamic_shapes=({0: Dim("batch", max=32)},))
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l1", "embed.weight"} <= set(cm.source.params)
    for b in (1, 5):
        tokens = torch.randint(0, 100, (b, 9))
        abs_err, rel_err = errors(cm(tokens.numpy()), eager(model, tokens))
        print(f"LSTMTagger batch {b}: max abs {abs_err:.2e}, rel {rel_err:.2e}")
        assert rel_err < 1e-5


SENTENCES = [
    ["Cats sleep."],
    ["A man is playing a guitar on the stage.", "Someone performs music with a guitar."],
    ["The committee postponed its decision on the new railway line until next spring, citing "
     "unresolved concerns about noise, cost overruns and the effect on nearby wetlands."] * 2
    + ["Share prices dropped quickly once the news came out."],
]


@pytest.mark.slow
def test_minilm_sentence_embeddings_at_three_lengths():
    model, tok = tm.minilm()
    model.eval()
    enc = tok.encode_batch(["hello world", "an example sentence"])  # batch and length 1 specialize
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    batch, seq = Dim("batch", max=32), Dim("sequence", min=2, max=512)
    cm = tensorsmith.compile(model, ids, mask,
                             dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    text = cm.source.to_text()
    assert "%input_ids: i64[batch,sequence]" in text and "requires sequence <= 512" in text
    assert "bert.encoder.layer.5.attention.self.query.weight" in cm.source.params
    lengths = set()
    for sents in SENTENCES:
        enc = tok.encode_batch(sents)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        lengths.add(ids.shape[1])
        out, ref = np.asarray(cm(ids.numpy(), mask.numpy()), np.float64), eager(model, ids, mask)
        ref = ref.double().numpy()
        cos = 1 - np.sum(out * ref, -1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(ref, axis=-1)
        abs_err, rel_err = errors(out, torch.from_numpy(ref))
        print(f"MiniLM {tuple(ids.shape)}: max cosine distance {cos.max():.2e}, max abs {abs_err:.2e}")
        assert cos.max() < 1e-4 and abs_err < 1e-4
    assert len(lengths) == 3
    assert cm.cache_info().pipeline_runs == 1


@pytest.mark.slow
def test_minilm_smooth_quant_keeps_torch_outputs():
    """A calibrated pass on a torch graph: SmoothQuant is exact, so torch stays the oracle."""
    model, tok = tm.minilm()
    model.eval()

    def encode(sents):
        enc = tok.encode_batch(sents)
        return (torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc]))

    batch, seq = Dim("batch", max=32), Dim("sequence", min=2, max=512)
    calibration = [tuple(a.numpy() for a in encode(s)) for s in SENTENCES[1:]]
    cm = tensorsmith.compile(model, *encode(["hello world", "an example sentence"]),
                             passes="default,smooth-quant", calibration=calibration,
                             dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    assert any(r.kind == "applied" for r in cm.history[-1].remarks)
    ids, mask = encode(["Someone performs music with a guitar in front of an audience."])
    abs_err, _ = errors(cm(ids.numpy(), mask.numpy()), eager(model, ids, mask))
    assert abs_err < 1e-5


def test_pruned_and_quantized_resnet_against_torch():
    """prune and quantize on a torch graph: pruned weights keep their state_dict names and,
    loaded back into a copy of the module, reproduce the compiled output; int8 stays close."""
    import copy
    torch.manual_seed(0)
    model = tm.randomize_bn(tm.ResNet18(num_classes=10, width=16)).eval()
    x = torch.randn(4, 3, 32, 32)
    cm = tensorsmith.compile(model, x, passes="default,prune{sparsity=0.5,include=[layer*]}")
    pruned = {k: v for k, v in cm.graph.params.items() if k in model.state_dict()}
    convs = [k for k in pruned if k.startswith("layer") and k.endswith("conv1.weight")]
    assert len(convs) == 8 and all(abs(np.mean(pruned[k] == 0) - 0.5) < 0.01 for k in convs)
    assert not np.any(pruned["conv1.weight"] == 0)  # outside include=[layer*]
    twin = copy.deepcopy(model)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in pruned.items()}, strict=False)
    abs_err, rel_err = errors(cm(x.numpy()), eager(twin, x))
    assert rel_err < 1e-5, (abs_err, rel_err)
    calibration = [(torch.randn(4, 3, 32, 32).numpy(),) for _ in range(4)]
    cq = tensorsmith.compile(model, x, passes="default,fold-batchnorm,quantize",
                             calibration=calibration)
    assert sum(n.op == "quantize" for n in cq.graph.nodes) >= 20
    _, rel_err = errors(cq(x.numpy()), eager(model, x))
    assert rel_err < 0.05, rel_err
