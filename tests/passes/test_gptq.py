"""gptq: weights land exactly on the int grid it records, and the layer output is closer to the
float one than round-to-nearest on the same grid (numpy float64 oracle)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import tensorsmith
from tensorsmith.passes.gptq import gptq_round


def _correlated(rng, rows, k):
    """Inputs whose features correlate, as real activations do (low rank plus noise)."""
    basis = rng.normal(size=(8, k))
    return rng.normal(size=(rows, 8)) @ basis + 0.1 * rng.normal(size=(rows, k))


def _rtn(w, bits, g):
    qmax = 2 ** (bits - 1) - 1
    out = np.empty_like(w)
    for i in range(0, w.shape[0], g):
        s = np.abs(w[i:i + g]).max(0) / qmax
        s = np.where(s > 0, s, 1.0)
        out[i:i + g] = np.clip(np.round(w[i:i + g] / s), -qmax - 1, qmax) * s
    return out


def _on_grid(q, scales, bits, g):
    qmax = 2 ** (bits - 1) - 1
    for i in range(q.shape[0]):
        ints = q[i] / scales[i // g]
        np.testing.assert_allclose(ints, np.round(ints), atol=1e-4)
        assert ints.min() >= -qmax - 1 - 1e-4 and ints.max() <= qmax + 1e-4


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits,g", [(4, 32), (4, 0), (3, 16), (8, 64)])
def test_gptq_beats_round_to_nearest_on_correlated_inputs(bits, g, act_order):
    rng = np.random.default_rng(bits * 100 + g)
    k, n = 64, 24
    x = _correlated(rng, 512, k)
    w = rng.normal(size=(k, n))
    q, scales = gptq_round(w, x.T @ x, bits, g, act_order=act_order)
    _on_grid(q, scales, bits, g or k)
    err = np.linalg.norm(x @ q - x @ w)
    rtn = np.linalg.norm(x @ _rtn(w, bits, g or k) - x @ w)
    assert err < 0.8 * rtn, (err, rtn)


def test_the_pass_rounds_dense_weights_and_records_the_grid():
    rng = np.random.default_rng(7)
    p = {"w1": rng.normal(size=(32, 64)).astype(np.float32),
         "w2": rng.normal(size=(64, 8)).astype(np.float32)}
    fn = lambda p, x: jax.nn.relu(x @ p["w1"]) @ p["w2"]  # noqa: E731
    basis = rng.normal(size=(6, 32))
    batch = lambda: ((rng.normal(size=(64, 6)) @ basis  # noqa: E731
                      + 0.05 * rng.normal(size=(64, 32))).astype(np.float32),)
    cal = [batch() for _ in range(4)]
    cm = tensorsmith.compile(fn, *cal[0], params=p, passes="gptq{bits=4, group_size=16}",
                             calibration=cal)
    q = cm.graph.params
    for name in ("w1", "w2"):
        note = cm.graph.annotation(name, "quant")
        assert note.attrs["dtype"] == "i4" and note.attrs["block_size"] == 16
        _on_grid(q[name].astype(np.float64), note.array.astype(np.float64), 4, 16)
    x = batch()[0]
    want = np.asarray(fn(p, x), np.float64)
    rtn = {k: _rtn(v.astype(np.float64), 4, 16).astype(np.float32) for k, v in p.items()}
    e_gptq = np.linalg.norm(np.asarray(cm(x), np.float64) - want)
    e_rtn = np.linalg.norm(np.asarray(fn(rtn, x), np.float64) - want)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)
    text = cm.graph.to_text()
    assert 'annotate @w1 quant {axis=1, block_size=16, dtype="i4", scheme="symmetric", ' \
           'source="gptq"}: f32[2,64]' in text


def test_gptq_needs_calibration_and_refuses_unsupported_bits():
    p = {"w": np.ones((4, 4), np.float32)}
    fn = lambda p, x: x @ p["w"]  # noqa: E731
    x = np.ones((2, 4), np.float32)
    with pytest.raises(tensorsmith.errors.PassFailure, match="gptq.*calibration"):
        tensorsmith.compile(fn, x, params=p, passes="gptq")
    with pytest.raises(tensorsmith.errors.PassFailure, match="bits"):
        tensorsmith.compile(fn, x, params=p, passes="gptq{bits=9}", calibration=[(x,)])
