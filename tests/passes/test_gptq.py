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


def test_search_scale_is_the_least_gptq_loss_ratio_per_column():
    """Against a brute-force float64 oracle (GPTQ's row loop per column and ratio): each
    column's scale is the grid ratio with the least loss sum_i e_i² / U_ii²."""
    from tensorsmith.passes.gptq import CLIP_RATIOS, search_scale
    rng = np.random.default_rng(11)
    w = rng.standard_t(3, size=(16, 6))  # heavy tails: clipping pays on some columns
    x = _correlated(rng, 256, 16)
    u = np.linalg.cholesky(np.linalg.inv(x.T @ x + 0.01 * np.eye(16))).T
    got = search_scale(w, u, 7)
    for j in range(w.shape[1]):
        amax = np.abs(w[:, j]).max()
        losses = []
        for r in CLIP_RATIOS:
            s, col, loss = r * amax / 7, w[:, j].copy(), 0.0
            for i in range(16):
                e = (col[i] - np.clip(np.round(col[i] / s), -8, 7) * s) / u[i, i]
                loss += e * e
                col[i + 1:] -= u[i, i + 1:] * e
            losses.append(loss)
        assert got[j] == pytest.approx(CLIP_RATIOS[int(np.argmin(losses))] * amax / 7,
                                       rel=1e-12)
    assert (got < np.abs(w).max(0) / 7 - 1e-12).any()  # some columns clip


@pytest.mark.parametrize("tails", ["t3", "normal"])
def test_clip_search_lowers_the_layer_error(tails):
    rng = np.random.default_rng(12)
    k, n = 128, 48
    x = _correlated(rng, 1024, k)
    w = rng.standard_t(3, size=(k, n)) if tails == "t3" else rng.normal(size=(k, n))
    plain, _ = gptq_round(w, x.T @ x, 4, 32)
    q, scales = gptq_round(w, x.T @ x, 4, 32, clip_search=True)
    _on_grid(q, scales, 4, 32)
    err = np.linalg.norm(x @ q - x @ w)
    assert err < 0.97 * np.linalg.norm(x @ plain - x @ w)
    # with act_order the scales are fixed up front: clip_search leaves them alone
    a, sa = gptq_round(w, x.T @ x, 4, 32, act_order=True)
    b, sb = gptq_round(w, x.T @ x, 4, 32, act_order=True, clip_search=True)
    np.testing.assert_array_equal(a, b)


def test_the_pass_option_clip_search():
    rng = np.random.default_rng(13)
    p = {"w": rng.standard_t(3, size=(64, 16)).astype(np.float32)}
    fn = lambda p, x: x @ p["w"]  # noqa: E731
    basis = rng.normal(size=(6, 64))
    cal = [((rng.normal(size=(64, 6)) @ basis + 0.05 * rng.normal(size=(64, 64)))
            .astype(np.float32),) for _ in range(4)]
    errs = {}
    for on in ("true", "false"):
        cm = tensorsmith.compile(fn, *cal[0], params=p, calibration=cal, passes="gptq{bits=4,"
                                 f"group_size=32,act_order=false,clip_search={on}}}")
        assert cm.history[-1].options["clip_search"] == (on == "true")
        x = np.concatenate([c[0] for c in cal]).astype(np.float64)
        errs[on] = np.linalg.norm(x @ cm.graph.params["w"] - x @ p["w"])
    assert errs["true"] < errs["false"]
