"""bias-correction: the quantized layer's mean output matches float (float64 numpy oracle)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import ir  # noqa: E402

from tensorsmith import codegen  # noqa: E402
from tensorsmith.errors import PassFailure  # noqa: E402
from tensorsmith.ir import parse  # noqa: E402
from tensorsmith.passes import PassContext, run_pipeline  # noqa: E402

DENSE = """
    graph @main(%x: f32[N,16]) {
      param @w: f32[16,8]
      param @b: f32[8]
      %0: f32[N,8] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
      %1: f32[N,8] = add(%0, @b)
      return %1
    }
    """

TWO = """
    graph @main(%x: f32[N,16]) {
      param @w1: f32[16,12]
      param @w2: f32[12,4]
      %0: f32[N,12] = dot_general(%x, @w1) {contracting_dims=((1,), (0,))}
      %1: f32[N,12] = relu(%0)
      %2: f32[N,4] = dot_general(%1, @w2) {contracting_dims=((1,), (0,))}
      return %2
    }
    """

INT4 = "quantize{dtype=int4,weights=per_tensor,activations=none,debug_batches=0}"


def _data(n, seed, mean=1.0, width=16):
    """Inputs with a non-zero mean: the weights' rounding error then shifts the output mean."""
    r = np.random.default_rng(seed)
    return [(r.normal(mean, 1.0, size=(32, width)).astype(np.float32),) for _ in range(n)]


def _fq4(w):
    """float64 per-tensor symmetric int4 fake-quant (scale = amax / 7), as quantize computes."""
    w = np.asarray(w, np.float64)
    s = np.float64(np.float32(np.abs(w).max() / 7))
    return np.clip(np.round(w / s), -8, 7) * s


def _run(text, params, pipeline, cal):
    g = parse(ir(text), params=params)
    ctx = PassContext(executor=codegen.executor, calibration=cal, progress=False)
    out, hist = run_pipeline(g, pipeline, ctx)
    return g, out, hist


def _params(seed=0):
    r = np.random.default_rng(seed)
    return {"w": r.normal(size=(16, 8)).astype(np.float32),
            "b": r.normal(size=8).astype(np.float32)}


def test_the_shift_subtracted_is_the_weights_rounding_error_times_the_input_mean():
    params = _params()
    cal = _data(4, seed=1)
    _, out, hist = _run(DENSE, params, f"{INT4},bias-correction", cal)
    x_cal = np.concatenate([b[0] for b in cal]).astype(np.float64)
    w = params["w"].astype(np.float64)
    shift = x_cal.mean(0) @ (_fq4(w) - w)  # E[x Wq - x W], exactly, for activations=none
    assert np.abs(shift).max() > 0.05  # a real shift to correct
    np.testing.assert_allclose(out.params["b"], params["b"] - shift, rtol=1e-4, atol=1e-5)
    rows = hist[-1].data["corrections"]
    assert rows[0]["bias"] == "b" and not rows[0]["added_bias"]
    assert rows[0]["max_abs_shift"] == pytest.approx(np.abs(shift).max(), rel=1e-4)
    remark = str(hist[-1].remarks.of_kind("applied")[0])
    assert "subtracted E[y_q - y] per channel from @b" in remark and "max |shift|" in remark

    # Held-out data of the same distribution: the corrected layer's mean output is float's.
    x = _data(8, seed=7)
    xs = np.concatenate([b[0] for b in x]).astype(np.float64)
    float_mean = (xs @ w + params["b"]).mean(0)
    fq_fn = codegen.executor(out)
    got = np.concatenate([np.asarray(fq_fn(*b)[0], np.float64) for b in x]).mean(0)
    before = (xs @ _fq4(w) + params["b"]).mean(0)
    err_after, err_before = np.abs(got - float_mean).max(), np.abs(before - float_mean).max()
    assert err_after < 0.15 * err_before, (err_after, err_before)


def test_layers_are_corrected_in_order_and_a_missing_bias_is_added():
    r = np.random.default_rng(2)
    params = {"w1": (r.normal(size=(16, 12)) / 3).astype(np.float32),
              "w2": (r.normal(size=(12, 4)) / 3).astype(np.float32)}
    cal = _data(4, seed=3)
    _, out, hist = _run(TWO, params, f"{INT4},bias-correction", cal)
    text = out.to_text()
    assert text.count("bias_correction") >= 4  # two new params, each declared and read
    assert [r["added_bias"] for r in hist[-1].data["corrections"]] == [True, True]

    # Oracle: layer 1 corrected first, then layer 2's shift measured behind the corrected one.
    x = np.concatenate([b[0] for b in cal]).astype(np.float64)
    w1, w2 = (params[k].astype(np.float64) for k in ("w1", "w2"))
    h_f = np.maximum(x @ w1, 0)
    c1 = (x @ _fq4(w1)).mean(0) - (x @ w1).mean(0)
    h_q = np.maximum(x @ _fq4(w1) - c1, 0)
    c2 = (h_q @ _fq4(w2)).mean(0) - (h_f @ w2).mean(0)
    new = {k: np.asarray(v, np.float64).reshape(-1) for k, v in out.params.items()
           if "bias_correction" in k}
    got1 = next(v for k, v in new.items() if k.startswith("w1"))
    got2 = next(v for k, v in new.items() if k.startswith("w2"))
    np.testing.assert_allclose(got1, -c1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got2, -c2, rtol=1e-4, atol=1e-5)
    y = np.asarray(codegen.executor(out)(*cal[0])[0], np.float64)
    xb = cal[0][0].astype(np.float64)
    want = np.maximum(xb @ _fq4(w1) - c1, 0) @ _fq4(w2) - c2
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    # the added biases do not stop lower-quant: int4 weights stored packed, same outputs
    low, _ = run_pipeline(out, "lower-quant", PassContext(executor=codegen.executor))
    assert {k for k in low.params if k.endswith("/q4")} == {"w1/q4", "w2/q4"}
    np.testing.assert_allclose(np.asarray(codegen.executor(low)(*cal[0])[0]), y,
                               rtol=1e-5, atol=1e-5)


def test_without_quantize_it_says_so_and_without_calibration_it_fails():
    params = _params()
    g, out, hist = _run(DENSE, params, "bias-correction", _data(2, seed=1))
    assert out is g or out.to_text() == g.to_text()
    assert "run quantize first" in str(hist[-1].remarks.of_kind("missed")[0])
    with pytest.raises(PassFailure, match="calibration"):
        _run(DENSE, params, f"{INT4},bias-correction", None)


def test_digits_cnn_int4_output_sqnr_improves():
    """The bundled digits CNN, int4 per-channel weights: corrected output closer to float."""
    import tensorsmith
    from tensorsmith import examples
    from tensorsmith.examples.train_digits_cnn import load_data
    ex = examples.load("digits-cnn")
    x, _ = ex.eval_data
    xt = load_data()[0]
    cal = [(xt[i:i + 32],) for i in range(0, 128, 32)]
    base = "default,fold-batchnorm,fuse,dce,quantize{dtype=int4,activations=none,debug_batches=0}"
    ref = np.asarray(ex.fn(ex.params, x), np.float64)

    def sqnr(passes):
        cm = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True,
                                 calibration=cal, passes=passes)
        o = np.asarray(cm(x), np.float64)
        return 10 * np.log10(np.sum(ref ** 2) / np.sum((o - ref) ** 2)), cm

    plain, _ = sqnr(base)
    corrected, cm = sqnr(base + ",bias-correction")
    assert corrected > plain + 1.0, (plain, corrected)
    assert len(cm.history[-1].data["corrections"]) == 4
