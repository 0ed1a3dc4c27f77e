"""Data-aware structured pruning: ``criterion=activation`` against a float64 numpy oracle of
each unit's output contribution, and ``reconstruct=true`` (exact when the removed channels
are linear combinations of kept ones; equal to numpy's lstsq otherwise)."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tensorsmith
from tensorsmith.errors import TensorsmithError


def _mlp_params(seed=0, d=12, f=16, o=5):
    r = np.random.default_rng(seed)
    return {"l1": {"w": (r.standard_normal((d, f)) / np.sqrt(d)).astype(np.float32),
                   "b": (0.1 * r.standard_normal(f)).astype(np.float32)},
            "l2": {"w": (r.standard_normal((f, o)) / np.sqrt(f)).astype(np.float32),
                   "b": (0.1 * r.standard_normal(o)).astype(np.float32)}}


def _mlp(p, x):
    return jax.nn.relu(x @ p["l1"]["w"] + p["l1"]["b"]) @ p["l2"]["w"] + p["l2"]["b"]


def _hidden(p, x):
    """The float64 oracle of the dense layer's input: relu(x W1 + b1)."""
    x = np.asarray(x, np.float64)
    return np.maximum(x @ p["l1"]["w"].astype(np.float64) + p["l1"]["b"], 0)


def _data(seed=1, n=4, batch=32, d=12):
    r = np.random.default_rng(seed)
    return [(r.standard_normal((batch, d)).astype(np.float32),) for _ in range(n)]


def _kept_columns(dense_w, pruned_w) -> list[int]:
    """Which columns of ``dense_w`` survived (the producer layer is sliced, not re-fitted)."""
    return [int(np.argmin(np.abs(dense_w - pruned_w[:, [j]]).sum(0))) for j in range(pruned_w.shape[1])]


def _compile(params, cal, passes, fn=_mlp):
    return tensorsmith.compile(fn, *cal[0], params=params, passes=passes, calibration=cal)


# --- criterion=activation -------------------------------------------------------------------
def test_activation_criterion_removes_the_smallest_output_contributions():
    p = _mlp_params()
    # four neurons with the largest weights but a bias that keeps them almost always off:
    # weight norms rank them first, their output contribution last
    p["l1"]["w"][:, :4] *= 3
    p["l2"]["w"][:4] *= 3
    p["l1"]["b"][:4] = -4.0
    cal = _data()
    cm = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=activation}")
    h = np.concatenate([_hidden(p, b[0]) for b in cal])
    score = np.linalg.norm(p["l2"]["w"].astype(np.float64), axis=1) * np.sqrt((h ** 2).mean(0))
    want = sorted(np.argsort(score, kind="stable")[4:].tolist())
    assert sorted(_kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])) == want
    l2 = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=l2}")
    assert sorted(_kept_columns(p["l1"]["w"], l2.graph.params["l1/w"])) != want  # not magnitude


def _mha_params(seed=3, d=16, h=4, hd=4):
    r = np.random.default_rng(seed)
    w = lambda *s: (r.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    p = {"wq": w(d, h * hd), "wk": w(d, h * hd), "wv": w(d, h * hd), "wo": w(h * hd, d),
         "bo": (0.1 * r.standard_normal(d)).astype(np.float32)}
    p["wv"][:, 2 * hd:3 * hd] *= 0.2  # head 2: small values, big query/key weights
    p["wq"][:, 2 * hd:3 * hd] *= 4
    return p


def _mha_context(p, x, h=4, hd=4):
    b, s, _ = x.shape
    split = lambda t: t.reshape(b, s, h, hd)  # noqa: E731
    q, k, v = split(x @ p["wq"]), split(x @ p["wk"]), split(x @ p["wv"])
    w = jax.nn.softmax(jnp.einsum("bshd,bthd->bhst", q, k) / np.sqrt(hd), -1)
    return jnp.einsum("bhst,bthd->bshd", w, v).reshape(b, s, h * hd)


def _mha(p, x):
    return _mha_context(p, x) @ p["wo"] + p["bo"]


def test_activation_criterion_ranks_heads_by_their_contribution_through_the_output_projection():
    p = _mha_params()
    r = np.random.default_rng(4)
    cal = [(r.standard_normal((8, 6, 16)).astype(np.float32),) for _ in range(3)]
    cm = _compile(p, cal, "prune{pattern=head,sparsity=0.25,criterion=activation}", fn=_mha)
    ctx = np.concatenate([np.asarray(_mha_context(p, b[0]), np.float64).reshape(-1, 16) for b in cal])
    wo = p["wo"].astype(np.float64)
    score = [np.sqrt(np.mean(np.sum((ctx[:, 4 * i:4 * i + 4] @ wo[4 * i:4 * i + 4]) ** 2, -1)))
             for i in range(4)]
    gone = int(np.argmin(score))
    kept = [i for i in range(4) if i != gone]
    want_wo = np.concatenate([p["wo"][4 * i:4 * i + 4] for i in kept])
    np.testing.assert_array_equal(cm.graph.params["wo"], want_wo)
    l2 = _compile(p, cal, "prune{pattern=head,sparsity=0.25,criterion=l2}", fn=_mha)
    assert not np.array_equal(l2.graph.params["wo"], want_wo)  # the weight norm picks another


def test_activation_criterion_without_calibration_says_how_to_pass_data():
    p = _mlp_params()
    with pytest.raises(TensorsmithError, match=r"criterion=activation needs calibration inputs.*"
                                               r"compile\(\.\.\., calibration="):
        tensorsmith.compile(_mlp, *_data()[0], params=p,
                            passes="prune{pattern=channel,sparsity=0.25,criterion=activation}")
    with pytest.raises(TensorsmithError, match=r"reconstruct=true needs calibration inputs"):
        tensorsmith.compile(_mlp, *_data()[0], params=p,
                            passes="prune{pattern=channel,sparsity=0.25,reconstruct=true}")


@pytest.mark.parametrize("opt", ["criterion=activation", "reconstruct=true"])
def test_data_options_refuse_unstructured_patterns(opt):
    with pytest.raises(TensorsmithError, match=re.escape(f"{opt} works with pattern=channel|head, "
                                                         "not pattern=unstructured")):
        _compile(_mlp_params(), _data(), f"prune{{sparsity=0.5,{opt}}}")


# --- reconstruct=true -----------------------------------------------------------------------
def test_reconstruction_is_exact_when_removed_channels_are_combinations_of_kept_ones():
    p = _mlp_params(seed=5)
    # neurons 12..15 are 0.1x neurons 0..3 (relu commutes with a positive scale): removing
    # them loses nothing a re-fit of the next layer cannot put back
    p["l1"]["w"][:, 12:] = 0.1 * p["l1"]["w"][:, :4]
    p["l1"]["b"][12:] = 0.1 * p["l1"]["b"][:4]
    p["l2"]["w"][12:] *= 0.1
    cal = _data(seed=6)
    x = _data(seed=7, n=1)[0]
    dense = np.asarray(_mlp(p, *x))
    plain = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=l1}")
    fitted = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=l1,reconstruct=true,damp=0}")
    assert sorted(_kept_columns(p["l1"]["w"], fitted.graph.params["l1/w"])) == list(range(12))
    assert not np.allclose(np.asarray(plain(*x)), dense, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(fitted(*x)), dense, rtol=1e-5, atol=1e-5)
    msgs = [r.message for rec in fitted.history for r in rec.remarks if r.kind == "applied"]
    assert any("@l2/w: 12 of 16 inputs kept, re-fitted" in m and "@l2/b" in m for m in msgs)


@pytest.mark.parametrize("damp", [0.0, 0.05])
def test_reconstruction_equals_the_ridge_least_squares_oracle(damp):
    p = _mlp_params(seed=8, f=24)
    cal = _data(seed=9, n=3)
    cm = _compile(p, cal, f"prune{{pattern=channel,sparsity=0.5,criterion=l2,reconstruct=true,damp={damp}}}")
    kept = _kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])
    h = np.concatenate([_hidden(p, b[0]) for b in cal])
    y = h @ p["l2"]["w"].astype(np.float64) + p["l2"]["b"]
    hs = h[:, kept]
    if damp == 0:  # the affine least-squares fit of the dense output on the kept inputs
        sol = np.linalg.lstsq(np.c_[hs, np.ones(len(hs))], y, rcond=None)[0]
        want_w, want_b = sol[:-1], sol[-1]
    else:  # ridge on the centred inputs towards the original rows, lambda = damp * mean variance
        hc, yc = hs - hs.mean(0), y - y.mean(0)
        lam = damp * hc.var(0).mean() * len(hs)
        w_s = p["l2"]["w"][kept].astype(np.float64)
        want_w = np.linalg.solve(hc.T @ hc + lam * np.eye(len(kept)), hc.T @ yc + lam * w_s)
        want_b = y.mean(0) - hs.mean(0) @ want_w
    np.testing.assert_allclose(cm.graph.params["l2/w"], want_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cm.graph.params["l2/b"], want_b, rtol=1e-4, atol=1e-5)
    if damp == 0:  # nothing fits the calibration data better than the oracle's solution
        x = cal[0]
        err = np.mean((np.asarray(cm(*x)) - np.asarray(_mlp(p, *x))) ** 2)
        plain = _compile(p, cal, "prune{pattern=channel,sparsity=0.5,criterion=l2}")
        assert err < np.mean((np.asarray(plain(*x)) - np.asarray(_mlp(p, *x))) ** 2)


def test_head_reconstruction_is_exact_when_a_removed_head_copies_a_kept_one():
    p = _mha_params()
    # head 3 attends exactly like head 0 (same queries and keys) and reads 0.1x its values:
    # its context is 0.1x head 0's, which the re-fitted output projection absorbs
    for k in ("wq", "wk"):
        p[k][:, 12:16] = p[k][:, 0:4]
    p["wv"][:, 12:16] = 0.1 * p["wv"][:, 0:4]
    p["wo"][12:16] *= 0.1
    r = np.random.default_rng(11)
    cal = [(r.standard_normal((8, 6, 16)).astype(np.float32),) for _ in range(3)]
    x = (r.standard_normal((8, 6, 16)).astype(np.float32),)
    opts = "pattern=head,sparsity=0.25,criterion=activation"
    plain = _compile(p, cal, f"prune{{{opts}}}", fn=_mha)
    fitted = _compile(p, cal, f"prune{{{opts},reconstruct=true,damp=0}}", fn=_mha)
    np.testing.assert_array_equal(fitted.graph.params["wq"], p["wq"][:, :12])  # head 3 went
    dense = np.asarray(_mha(p, *x))
    assert not np.allclose(np.asarray(plain(*x)), dense, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(fitted(*x)), dense, rtol=1e-4, atol=1e-5)


def test_obs_criterion_removes_what_the_refit_can_replace():
    p = _mlp_params(seed=5)
    # neurons 12..15 are 3x neurons 0..3: large weights, large contributions, yet redundant
    p["l1"]["w"][:, 12:] = 3 * p["l1"]["w"][:, :4]
    p["l1"]["b"][12:] = 3 * p["l1"]["b"][:4]
    cal = _data(seed=6)
    x = _data(seed=7, n=1)[0]
    dense = np.asarray(_mlp(p, *x))
    for crit in ("l2", "activation"):  # they keep both copies and lose something else
        cm = _compile(p, cal, f"prune{{pattern=channel,sparsity=0.25,criterion={crit},reconstruct=true,damp=0}}")
        assert not np.allclose(np.asarray(cm(*x)), dense, rtol=1e-3, atol=1e-3)
    cm = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=obs,reconstruct=true,damp=0}")
    kept = _kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])
    assert all((i in kept) != (i + 12 in kept) for i in range(4))  # one of each pair went
    np.testing.assert_allclose(np.asarray(cm(*x)), dense, rtol=1e-5, atol=1e-5)


def _masked_mlp(p, x, m):
    return _mlp(p, x) * m[:, None]  # rows with m == 0 (padding) do not reach the output


def _padded_calibration():
    """Three batches of 32 rows, ~40% of them padding (m == 0) from another distribution."""
    r = np.random.default_rng(13)
    cal = []
    for _ in range(3):
        x = r.standard_normal((32, 12)).astype(np.float32)
        m = (r.random(32) < 0.6).astype(np.float32)
        x[m == 0] *= 5
        cal.append((x, m))
    return r, cal


def test_mask_input_leaves_padding_rows_out_of_the_fit():
    p = _mlp_params(seed=12, f=20)
    r, cal = _padded_calibration()
    opts = "pattern=channel,sparsity=0.5,criterion=l2,reconstruct=true,damp=0"
    cm = _compile(p, cal, f"prune{{{opts},mask_input=m}}", fn=_masked_mlp)
    kept = _kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])
    h = np.concatenate([_hidden(p, x)[m != 0] for x, m in cal])  # the oracle sees real rows only
    y = h @ p["l2"]["w"].astype(np.float64) + p["l2"]["b"]
    sol = np.linalg.lstsq(np.c_[h[:, kept], np.ones(len(h))], y, rcond=None)[0]
    np.testing.assert_allclose(cm.graph.params["l2/w"], sol[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cm.graph.params["l2/b"], sol[-1], rtol=1e-4, atol=1e-5)
    every = _compile(p, cal, f"prune{{{opts}}}", fn=_masked_mlp)  # all rows: another fit
    assert not np.allclose(every.graph.params["l2/w"], sol[:-1], rtol=1e-3, atol=1e-3)
    with pytest.raises(TensorsmithError, match=r"option 'mask_input': _masked_mlp has no input %mm "
                                               r"\(closest: %m\)"):
        _compile(p, cal, f"prune{{{opts},mask_input=mm}}", fn=_masked_mlp)


# --- reconstruct=sequential -----------------------------------------------------------------
def _deep_params(seed=20, d=10, f=16, o=4):
    r = np.random.default_rng(seed)
    lin = lambda i, j: {"w": (r.standard_normal((i, j)) / np.sqrt(i)).astype(np.float32),  # noqa: E731
                        "b": (0.1 * r.standard_normal(j)).astype(np.float32)}
    return {"l1": lin(d, f), "l2": lin(f, f), "l3": lin(f, o)}


def _deep(p, x):
    h = jax.nn.relu(x @ p["l1"]["w"] + p["l1"]["b"])
    h = jax.nn.relu(h @ p["l2"]["w"] + p["l2"]["b"])
    return h @ p["l3"]["w"] + p["l3"]["b"]


def _affine_lstsq(a, y):
    sol = np.linalg.lstsq(np.c_[a, np.ones(len(a))], y, rcond=None)[0]
    return sol[:-1], sol[-1]


def test_sequential_reconstruction_fits_the_pruned_input_to_the_dense_output():
    """Two consumers in a row: the second is fitted on the input the pruned (and re-fitted)
    first layer gives it, to the dense model's output of that layer (float64 lstsq oracle)."""
    p = _deep_params()
    cal = [(np.random.default_rng(21 + i).standard_normal((64, 10)).astype(np.float32),) for i in range(3)]
    opts = "pattern=channel,sparsity=0.25,criterion=l2,damp=0,include=[l1/w,l2/w]"
    cm = _compile(p, cal, f"prune{{{opts},reconstruct=sequential}}", fn=_deep)
    f64 = {k: {n: a.astype(np.float64) for n, a in v.items()} for k, v in p.items()}
    k1 = _kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])
    x = np.concatenate([b[0] for b in cal]).astype(np.float64)
    h1 = np.maximum(x @ f64["l1"]["w"] + f64["l1"]["b"], 0)  # dense
    h2 = np.maximum(h1 @ f64["l2"]["w"] + f64["l2"]["b"], 0)
    # layer 2: nothing upstream of its input is pruned but its own input channels
    w2, b2 = _affine_lstsq(h1[:, k1], h1 @ f64["l2"]["w"] + f64["l2"]["b"])
    k2 = [int(np.argmin(np.abs(w2 - cm.graph.params["l2/w"][:, [j]]).sum(0)))
          for j in range(cm.graph.params["l2/w"].shape[1])]
    np.testing.assert_allclose(cm.graph.params["l2/w"], w2[:, k2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cm.graph.params["l2/b"], b2[k2], rtol=1e-4, atol=1e-4)
    # layer 3: fitted on the pruned model's h2 (through re-fitted layer 2), to the dense output
    h2p = np.maximum(h1[:, k1] @ w2[:, k2] + b2[k2], 0)
    w3, b3 = _affine_lstsq(h2p, h2 @ f64["l3"]["w"] + f64["l3"]["b"])
    np.testing.assert_allclose(cm.graph.params["l3/w"], w3, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cm.graph.params["l3/b"], b3, rtol=1e-4, atol=1e-4)
    # independent re-fits (reconstruct=true) fit layer 3 on the dense h2 instead: another answer
    ind = _compile(p, cal, f"prune{{{opts},reconstruct=true}}", fn=_deep)
    assert not np.allclose(ind.graph.params["l3/w"], w3, rtol=1e-3, atol=1e-3)
    err = lambda m: np.mean((np.asarray(m(*cal[0])) - np.asarray(_deep(p, *cal[0]))) ** 2)  # noqa: E731
    assert err(cm) < err(ind)
    msgs = [r.message for rec in cm.history for r in rec.remarks if r.kind == "applied"]
    assert any("@l3/w: 12 of 16 inputs kept, re-fitted in sequence to the dense model's output" in m
               for m in msgs)


@pytest.mark.parametrize("damp", [0.0, 0.05])
def test_sequential_reconstruction_equals_the_independent_one_with_nothing_pruned_upstream(damp):
    p = _mlp_params(seed=8, f=24)
    cal = _data(seed=9, n=3)
    opts = f"pattern=channel,sparsity=0.5,criterion=l2,damp={damp}"
    seq = _compile(p, cal, f"prune{{{opts},reconstruct=sequential}}")
    ind = _compile(p, cal, f"prune{{{opts},reconstruct=true}}")
    for k in ("l1/w", "l1/b", "l2/w", "l2/b"):
        np.testing.assert_allclose(seq.graph.params[k], ind.graph.params[k], rtol=1e-5, atol=1e-6)


def test_sequential_reconstruction_with_obs_and_a_padding_mask_matches_the_oracle():
    p = _mlp_params(seed=12, f=20)
    r, cal = _padded_calibration()
    cm = _compile(p, cal, "prune{pattern=channel,sparsity=0.5,criterion=obs,damp=0,"
                          "reconstruct=sequential,mask_input=m}", fn=_masked_mlp)
    kept = _kept_columns(p["l1"]["w"], cm.graph.params["l1/w"])
    h = np.concatenate([_hidden(p, x)[m != 0] for x, m in cal])
    w, b = _affine_lstsq(h[:, kept], h @ p["l2"]["w"].astype(np.float64) + p["l2"]["b"])
    np.testing.assert_allclose(cm.graph.params["l2/w"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cm.graph.params["l2/b"], b, rtol=1e-4, atol=1e-5)


def test_reconstruct_option_names_its_values():
    with pytest.raises(TensorsmithError, match=r"option 'reconstruct': 'sequentail' is not one of "
                                               r"true, false, sequential"):
        _compile(_mlp_params(), _data(), "prune{pattern=channel,sparsity=0.5,reconstruct=sequentail}")
    with pytest.raises(TensorsmithError, match=r"reconstruct=sequential needs calibration inputs"):
        tensorsmith.compile(_mlp, *_data()[0], params=_mlp_params(),
                            passes="prune{pattern=channel,sparsity=0.25,reconstruct=sequential}")


def _res_params(seed=30, d=8, f=16):
    r = np.random.default_rng(seed)
    lin = lambda i, j: {"w": (r.standard_normal((i, j)) / np.sqrt(i)).astype(np.float32),  # noqa: E731
                        "b": (0.1 * r.standard_normal(j)).astype(np.float32)}
    return {"a1": lin(d, f), "b1": lin(f, d), "a2": lin(d, f), "b2": lin(f, d)}


def _res(p, x):
    for i in "12":
        x = x + (jax.nn.relu(x @ p["a" + i]["w"] + p["a" + i]["b"]) @ p["b" + i]["w"] + p["b" + i]["b"])
    return x


def test_sequential_reconstruction_also_makes_up_for_the_residual_streams_error():
    """Two residual blocks: the second block's output layer is fitted so that residual plus
    branch, in the pruned model, reproduce the dense model's sum (float64 lstsq oracle)."""
    p = _res_params()
    cal = [(np.random.default_rng(31 + i).standard_normal((64, 8)).astype(np.float32),) for i in range(3)]
    cm = _compile(p, cal, "prune{pattern=channel,sparsity=0.25,criterion=l2,damp=0,"
                          "include=[a1/w,a2/w],reconstruct=sequential}", fn=_res)
    f = {k: {n: a.astype(np.float64) for n, a in v.items()} for k, v in p.items()}
    k1 = _kept_columns(p["a1"]["w"], cm.graph.params["a1/w"])
    k2 = _kept_columns(p["a2"]["w"], cm.graph.params["a2/w"])
    x = np.concatenate([b[0] for b in cal]).astype(np.float64)
    h1 = np.maximum(x @ f["a1"]["w"] + f["a1"]["b"], 0)
    y1 = x + h1 @ f["b1"]["w"] + f["b1"]["b"]  # dense
    w1, c1 = _affine_lstsq(h1[:, k1], h1 @ f["b1"]["w"] + f["b1"]["b"])  # nothing upstream yet
    np.testing.assert_allclose(cm.graph.params["b1/w"], w1, rtol=1e-4, atol=1e-4)
    y1p = x + h1[:, k1] @ w1 + c1  # the pruned model's residual stream
    h2, h2p = (np.maximum(y @ f["a2"]["w"] + f["a2"]["b"], 0) for y in (y1, y1p))
    y2 = y1 + h2 @ f["b2"]["w"] + f["b2"]["b"]
    w2, c2 = _affine_lstsq(h2p[:, k2], y2 - y1p)  # branch output = dense sum - pruned residual
    np.testing.assert_allclose(cm.graph.params["b2/w"], w2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cm.graph.params["b2/b"], c2, rtol=1e-4, atol=1e-4)
    msgs = [r.message for rec in cm.history for r in rec.remarks if r.kind == "applied"]
    assert any("@b2/w: 12 of 16 inputs kept" in m and "plus the error of the residual" in m for m in msgs)
