"""QAT: finetune through int4 weight fake-quant lowers its loss; lowered weights stay on the grid."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import tensorsmith
from tensorsmith.finetune import finetune
from tensorsmith.passes.quant_match import quantize_array


def _mlp(p, x):
    return jnp.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]


def _setup():
    r = np.random.default_rng(0)
    params = {"w1": (r.normal(size=(32, 64)) / 5.6).astype(np.float32),
              "b1": (r.normal(size=64) * 0.1).astype(np.float32),
              "w2": (r.normal(size=(64, 8)) / 8).astype(np.float32),
              "b2": np.zeros(8, np.float32)}
    x = [r.normal(size=(64, 32)).astype(np.float32) for _ in range(40)]
    return params, x


def _mse(cm, params, xs):
    return float(np.mean([np.mean((np.asarray(cm(x), np.float64)
                                   - np.asarray(_mlp(params, x), np.float64)) ** 2) for x in xs]))


def test_qat_lowers_the_fake_quant_loss_and_lowering_keeps_the_int4_grid():
    params, xs = _setup()
    train, held_out = xs[:32], xs[32:]
    cm = tensorsmith.compile(_mlp, xs[0], params=params, batch_dim=True, calibration=[(xs[0],)],
                             passes="quantize{dtype=int4,weights=per_channel,activations=none,"
                                    "debug_batches=0}")
    ft, hist = finetune(cm, [(x,) for x in train], steps=150, lr=3e-4, progress=False)
    before, after = _mse(cm, params, held_out), _mse(ft, params, held_out)
    assert after < 0.7 * before, (before, after)  # distillation against the float source
    assert hist.loss[-1] < hist.loss[0]
    trained = {k: np.asarray(v) for k, v in ft.graph.params.items()}
    assert not np.array_equal(trained["w1"], cm.graph.params["w1"])  # the weights moved

    low = tensorsmith.compile(ft.graph, passes="lower-quant")
    lowered = [r for rec in low.history for r in rec.remarks if r.kind == "applied"]
    assert len(lowered) == 2 and all("weight-only i4" in r.message for r in lowered), lowered
    for w in ("w1", "w2"):
        packed = np.asarray(low.graph.params[f"{w}/q4"])
        assert packed.dtype == np.uint8 and packed.shape[0] == (trained[w].shape[0] + 1) // 2
        # unpack in numpy: low nibble row 2j, high nibble row 2j+1, sign-extended
        lo = (packed.astype(np.int16) & 0xF)
        hi = (packed.astype(np.int16) >> 4) & 0xF
        q = np.empty((2 * packed.shape[0],) + packed.shape[1:], np.int16)
        q[0::2], q[1::2] = lo, hi
        q = np.where(q > 7, q - 16, q)[:trained[w].shape[0]]
        want = quantize_array(trained[w], trained[f"{w}.scale"], None, 1, 0, "i4")
        np.testing.assert_array_equal(q, want)  # exactly the trained weight's int4 codes
        assert q.min() >= -8 and q.max() <= 7
    for x in held_out:
        (out,) = low(x)  # a compiled Graph returns its outputs as a list
        np.testing.assert_allclose(np.asarray(out), np.asarray(ft(x)), rtol=1e-5, atol=1e-5)
