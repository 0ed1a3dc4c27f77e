"""Compare a compiled ONNX model with onnx's reference evaluator (or onnxruntime)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

import tensorsmith


def compare_with_oracle(m, inputs: dict, rtol: float, atol: float, oracle: str = "reference"):
    """Compile ``m``, run it on ``inputs`` and check every output against the oracle
    (``"ort"`` where the reference lacks a feature or an old opset's form); returns the
    compiled model and its outputs."""
    if oracle == "ort":
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, inputs)
    else:
        want = ReferenceEvaluator(m).run(None, inputs)
    compiled = tensorsmith.compile(m, target="cpu")
    got = compiled(*inputs.values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return compiled, got
