"""cm.export_onnx: float models match tensorsmith in onnxruntime; quantized models become QDQ
ONNX (QuantizeLinear/DequantizeLinear with the calibrated scales) that onnxruntime runs and that
agree with tensorsmith's lowered int8 model; unsupported ops are named before anything is written."""
from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import tensorsmith
from tensorsmith import codegen
from tensorsmith.errors import ExportError
from tensorsmith.export_onnx import OnnxExportError, export_onnx, to_onnx
from tensorsmith.ir import GraphBuilder, TensorType

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "onnx"))
from models import (bert_encoder_layer, bert_inputs, mlp_dynamic, mlp_inputs,  # noqa: E402
                    resnet_cnn, resnet_inputs)

RNG = np.random.default_rng(0)


def _ort(path_or_model, *inputs):
    src = path_or_model if isinstance(path_or_model, (str, os.PathLike)) else \
        path_or_model.SerializeToString()
    s = ort.InferenceSession(str(src) if isinstance(src, os.PathLike) else src,
                             providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), inputs)})


@pytest.fixture(scope="module")
def digits():
    ex = tensorsmith.examples.load("digits-cnn")
    x, y = ex.eval_data
    calib = [(x[i:i + 32],) for i in range(0, 128, 32)]
    return ex, x, y, calib


# --- float models -----------------------------------------------------------------------------
def test_float_digits_cnn_matches_tensorsmith(digits, tmp_path):
    ex, x, _, _ = digits
    cm = tensorsmith.compile(ex.fn, x, params=ex.params, batch_dim=True)
    path = cm.export_onnx(tmp_path / "digits.onnx")
    onnx.checker.check_model(onnx.load(path))
    (got,) = _ort(path, x)
    np.testing.assert_allclose(got, np.asarray(cm(x)), rtol=1e-5, atol=1e-5)
    # the batch stays open: another batch size runs too
    (got3,) = _ort(path, x[:3])
    np.testing.assert_allclose(got3, np.asarray(cm(x[:3])), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,inputs", [(resnet_cnn, lambda: resnet_inputs(3)),
                                         (mlp_dynamic, lambda: mlp_inputs(5)),
                                         (bert_encoder_layer, lambda: bert_inputs(2))])
def test_float_onnx_models_round_trip(make, inputs, tmp_path):
    model, feeds = make(), inputs()
    cm = tensorsmith.compile(model)
    want = cm(*feeds.values())
    want = list(want) if isinstance(want, (list, tuple)) else [want]
    got = _ort(cm.export_onnx(tmp_path / "m.onnx"), *feeds.values())
    orig = _ort(model, *feeds.values())  # and against the source model itself
    for g, w, o in zip(got, want, orig):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, o, rtol=1e-5, atol=1e-5)


# --- QDQ ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", ["default,quantize", "default,fuse,quantize"])
def test_quantized_digits_qdq_agrees_with_lowered_model(digits, pipeline, tmp_path):
    ex, x, y, calib = digits
    low = tensorsmith.compile(ex.fn, x, params=ex.params, passes=pipeline + ",lower-quant",
                              calibration=calib, batch_dim=True)
    assert 'preferred_element_type="i32"' in low.ir()
    path = low.export_onnx(tmp_path / "q.onnx")
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8, ops
    # the calibrated scales are the ones written
    fq_graph = next(r.graph for r in low.history if r.name == "quantize")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = [k for k in fq_graph.params if k.endswith(".scale")]
    assert scales
    for k in scales:
        np.testing.assert_array_equal(inits[k], fq_graph.params[k])
    # weights are written as their int8 codes feeding DequantizeLinear (no float copy)
    kernels = {k: a for k, a in inits.items() if "kernel" in k and not k.endswith(".scale")}
    assert len(kernels) == 4 and {a.dtype for a in kernels.values()} == {np.dtype(np.int8)}
    assert os.path.getsize(path) < 0.3 * sum(
        a.nbytes for k, a in fq_graph.params.items() if k.endswith("kernel")) + 8192
    (got,) = _ort(path, x)
    lowered = np.asarray(low(x))
    agree = np.mean(got.argmax(1) == lowered.argmax(1))
    assert agree >= 0.99, agree
    assert np.mean(got.argmax(1) == y) >= np.mean(lowered.argmax(1) == y) - 0.01


def _qdq_graph(w_dtype, block=0, act_dtype="i8", zx=None):
    K, N = 64, 16
    W = RNG.standard_normal((K, N)).astype(np.float32)
    b = GraphBuilder("qdq")
    x = b.input(TensorType(("B", K), "f32"), "x")
    sx = b.param(np.float32(0.03), "x.scale")
    args = [sx] + ([b.param(np.asarray(zx, np.uint8 if act_dtype == "u8" else np.int8), "x.zp")]
                   if zx is not None else [])
    dx = b.op("dequantize", b.op("quantize", x, *args, dtype=act_dtype, axis=0, block_size=0),
              *args, axis=0, block_size=0)
    if block:
        scale = (np.abs(W.reshape(K // block, block, N)).max(1) / 7).astype(np.float32)
        axis = 0
    else:
        hi = 127 if w_dtype == "i8" else float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
        scale, axis = (np.abs(W).max(0) / hi).astype(np.float32), 1
    s = b.param(scale, "w.scale")
    dw = b.op("dequantize", b.op("quantize", b.param(W, "w"), s, dtype=w_dtype, axis=axis,
                                 block_size=block), s, axis=axis, block_size=block)
    y = b.op("dot_general", dx, dw, contracting_dims=((1,), (0,)))
    return b.build([b.op("relu", y)])


@pytest.mark.parametrize("w_dtype,block,act,zx", [("i8", 0, "i8", None), ("i8", 0, "u8", 120),
                                                  ("i4", 16, "i8", 3),
                                                  ("f8e4m3fn", 0, "f8e4m3fn", None)])
def test_qdq_graphs_match_fake_quant_in_onnxruntime(w_dtype, block, act, zx, tmp_path):
    g = _qdq_graph(w_dtype, block, act, zx)
    path = export_onnx(g, tmp_path / "g.onnx")
    model = onnx.load(path)
    assert model.opset_import[0].version == (21 if block else 19)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "w" not in inits and inits["w/quantized"].dtype == np.dtype(
        {"i8": np.int8, "i4": ml_dtypes.int4, "f8e4m3fn": ml_dtypes.float8_e4m3fn}[w_dtype])
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 1  # the activation
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    (got,) = _ort(path, x)
    want = codegen.executor(g, jit=True)(x)[0]
    # same quantized codes; float sums in another order
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the weights are exported as the float param and its QuantizeLinear; after lower-quant the
    # export still writes the fake-quant graph, with the same numbers
    low = tensorsmith.compile(g, passes="lower-quant")
    (got_low,) = _ort(low.export_onnx(tmp_path / "low.onnx"), x)
    np.testing.assert_array_equal(got_low, got)


# --- errors and files ----------------------------------------------------------------------
def test_unsupported_ops_are_listed_and_nothing_is_written(tmp_path):
    b = GraphBuilder("bad")
    x = b.input(TensorType((4, 8), "f32"), "x")
    y = b.op("sort", b.op("cumsum", x, axis=1), axis=1)
    g = b.build([b.op("add", y, x)])
    target = tmp_path / "bad.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(OnnxExportError) as e:
        export_onnx(g, target)
    msg = str(e.value)
    assert "cumsum (%" in msg and "sort (%" in msg and "@bad" in msg, msg
    assert isinstance(e.value, ExportError)
    assert target.read_bytes() == b"previous"  # a failed export leaves the old file alone


def test_opset_older_than_needed_is_refused():
    g = _qdq_graph("i4", 16)
    with pytest.raises(OnnxExportError, match="needs 21"):
        to_onnx(g, opset=19)


def test_qdq_export_imports_back_and_lowers_to_int8(tmp_path):
    """quantize -> QDQ ONNX -> import -> lower-quant: int8 convs on the written int8 weights."""
    model, feeds = resnet_cnn(), resnet_inputs(8)
    calib = [tuple(resnet_inputs(8, seed=s).values()) for s in range(1, 4)]
    fq = tensorsmith.compile(model, passes="default,quantize", calibration=calib)
    path = fq.export_onnx(tmp_path / "resnet_qdq.onnx")
    back = tensorsmith.compile(str(path), passes="default,lower-quant")
    applied = [r for rec in back.history for r in rec.remarks
               if r.pass_name == "lower-quant" and r.kind == "applied"]
    convs = fq.ir().count("= conv(")
    assert len(applied) == convs and all("stored i8" in r.message for r in applied), applied
    x = list(feeds.values())
    (ref,) = _ort(path, *x)
    (got,) = back(*x)
    (want,) = fq(*x)
    # another graph rounds a few activations on the other side of a tie: a step or two apart
    tol = 0.05 * np.abs(ref).max()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=tol)
