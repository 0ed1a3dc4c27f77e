"""Whole ONNX models (ResNet-style CNN, BERT encoder layer, MLP) end to end: tensorsmith.compile
against onnx's reference evaluator and onnxruntime, at two batch sizes of fresh random inputs,
with and without the default pipeline; the model forms (proto, path, bytes); no mutation of the
user's proto; symbolic batch dims kept in the IR."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import tensorsmith
from tensorsmith.ir.dims import DimExpr

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402

RTOL = ATOL = 1e-4
BATCHES = (2, 5)  # two sizes, so one compiled model must serve both through its symbolic batch
NAMES = list(models.MODELS)


@pytest.fixture(scope="module")
def built():
    """name -> (ModelProto, ReferenceEvaluator, ort session); built once per module."""
    out = {}
    for name, (build, _) in models.MODELS.items():
        m = build()
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        out[name] = (m, ReferenceEvaluator(m), sess)
    return out


def _call(cm, feeds: dict) -> list[np.ndarray]:
    args = [feeds[v.name] for v in cm.graph.inputs]
    return [np.asarray(o) for o in cm(*args)]


def _compare(got, want, what: str):
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, \
            f"{what} output {i}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{what} output {i}")


@pytest.mark.parametrize("passes", [None, "default"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_and_onnxruntime(built, name, passes):
    m, ref, sess = built[name]
    before = m.SerializeToString()
    cm = tensorsmith.compile(m, target="cpu", passes=passes)
    assert m.SerializeToString() == before, "compile() changed the caller's ModelProto"
    inputs = models.MODELS[name][1]
    for batch in BATCHES:
        feeds = inputs(batch, seed=100 + batch)
        got = _call(cm, feeds)
        assert got[0].shape[0] == batch
        _compare(got, ref.run(None, feeds), f"{name} passes={passes} batch={batch} vs reference")
        _compare(got, sess.run(None, feeds), f"{name} passes={passes} batch={batch} vs onnxruntime")
    assert m.SerializeToString() == before, "running the compiled model changed the ModelProto"


@pytest.mark.parametrize("name", NAMES)
def test_dynamic_batch_stays_symbolic(built, name):
    m = built[name][0]
    symbol = m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    for passes in (None, "default"):
        g = tensorsmith.compile(m, passes=passes).graph
        assert isinstance(g.inputs[0].type.shape[0], DimExpr)
        assert g.inputs[0].type.shape[0] == symbol
        assert all(o.type.shape[0] == symbol for o in g.outputs), [str(o.type) for o in g.outputs]


@pytest.mark.parametrize("name", ["mlp_dynamic", "bert_encoder_layer"])
def test_path_and_bytes_forms(built, name, tmp_path):
    m, _, sess = built[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, str(path))
    feeds = models.MODELS[name][1](3, seed=7)
    want = sess.run(None, feeds)
    for form, model in (("str path", str(path)), ("Path", path), ("bytes", path.read_bytes())):
        cm = tensorsmith.compile(model, target="cpu")
        _compare(_call(cm, feeds), want, f"{name} as {form}")
        assert isinstance(cm.graph.inputs[0].type.shape[0], DimExpr), form


def test_fixed_batch_model_is_static():
    m = models.resnet_cnn(batch=4)
    cm = tensorsmith.compile(m)
    assert cm.graph.inputs[0].type.shape == (4, 3, 32, 32)
    feeds = models.resnet_inputs(4, seed=3)
    _compare(_call(cm, feeds), ReferenceEvaluator(m).run(None, feeds), "resnet batch=4")


def test_bert_with_symbolic_sequence_length():
    """``dynamic_axes`` on batch and sequence: the Shape->Gather->Concat head split stays symbolic."""
    m = models.bert_encoder_layer(batch="B", seq="S")
    cm = tensorsmith.compile(m, passes="default")
    assert [str(v.type) for v in cm.graph.inputs] == ["f32[B,S,64]", "f32[B,1,1,S]"]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, seq in ((2, 16), (3, 9)):
        feeds = models.bert_inputs(batch, seq=seq, seed=batch * seq)
        _compare(_call(cm, feeds), sess.run(None, feeds), f"bert batch={batch} seq={seq}")


def test_builders_are_deterministic_and_valid():
    for name, (build, _) in models.MODELS.items():
        a, b = build(), build()
        assert a.SerializeToString() == b.SerializeToString(), name
        onnx.checker.check_model(a, full_check=True)
        assert 17 <= a.opset_import[0].version <= 21, name
