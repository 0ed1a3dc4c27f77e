"""tensorsmith.finetune: masks hold, loss falls, distillation pulls toward the teacher, Ctrl-C keeps the best."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import tensorsmith
from tensorsmith import examples
from tensorsmith.errors import UsageFailure
from tensorsmith.finetune import magnitude_mask, polynomial

pytest.importorskip("optax")


@pytest.fixture(scope="module")
def digits():
    from tensorsmith.examples.train_digits_cnn import load_data
    ex = examples.load("digits-cnn")
    x_train, x_test, y_train, y_test = load_data()
    np.testing.assert_array_equal(x_test, ex.eval_data[0])  # the bundled held-out split
    cm = tensorsmith.compile(ex.fn, ex.example_inputs[0], params=ex.params, batch_dim=True)
    return ex, cm, (x_train, y_train), (x_test, y_test)


def _batches(x, y=None, size=64, n=None):
    out = []
    for i in range(0, len(x) - size + 1, size):
        out.append((x[i:i + size],) if y is None else (x[i:i + size], y[i:i + size]))
    return out[:n] if n else out


def _accuracy(cm, x, y):
    return float(np.mean(np.argmax(np.asarray(cm(x)), -1) == y))


def _ce(cm, x, y):
    logits = np.asarray(cm(x), np.float64)
    logits -= logits.max(-1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(y)), y]))


def _kernel_masks(cm, sparsity):
    return {k: magnitude_mask(v, sparsity) for k, v in cm.params.items() if v.ndim >= 2}


def test_masks_hold_and_input_model_is_unchanged(digits):
    ex, cm, (x, y), (xt, yt) = digits
    before = {k: v.copy() for k, v in cm.params.items()}
    masks = _kernel_masks(cm, 0.8)
    out, hist = tensorsmith.finetune(cm, _batches(x, y), steps=30, masks=masks, lr=1e-3,
                                     progress=False)
    assert hist.steps == 30 and len(hist.loss) == 30
    for k, m in masks.items():
        w = out.params[k]
        assert np.all(w[~m] == 0.0), k
        assert np.count_nonzero(w[m]) == m.sum(), f"{k}: kept entries were zeroed"
        assert hist.masked[k] == pytest.approx(1 - m.mean())
    for k, v in cm.params.items():  # the input model is never mutated
        np.testing.assert_array_equal(v, before[k])
    assert out is not cm
    ann = getattr(out.graph, "annotation", None)
    if ann is not None:  # masks travel with the graph as annotations
        k = next(iter(masks))
        np.testing.assert_array_equal(ann(k, "mask").array, masks[k])


def test_training_lowers_the_loss_of_a_pruned_model(digits):
    ex, cm, (x, y), (xt, yt) = digits
    masks = _kernel_masks(cm, 0.9)
    pruned = cm.with_params({k: cm.params[k] * m for k, m in masks.items()})
    start = _ce(pruned, xt, yt)
    out, hist = tensorsmith.finetune(pruned, _batches(x, y), steps=120, masks=masks, lr=2e-3,
                                     teacher=False, progress=False)
    end = _ce(out, xt, yt)
    assert end < 0.7 * start, (start, end)
    assert np.mean(hist.loss[-10:]) < np.mean(hist.loss[:10])
    assert _accuracy(out, xt, yt) > _accuracy(pruned, xt, yt)


def test_distillation_only_pulls_a_perturbed_student_to_the_teacher(digits):
    ex, cm, (x, _), (xt, _) = digits
    r = np.random.default_rng(0)
    noisy = cm.with_params({k: v + 0.3 * np.std(v) * r.standard_normal(v.shape).astype(v.dtype)
                            for k, v in cm.params.items() if v.ndim >= 2})
    teacher = np.asarray(ex.fn(ex.params, xt))  # the source JAX function is the oracle
    gap0 = float(np.mean(np.abs(np.asarray(noisy(xt)) - teacher)))
    out, hist = tensorsmith.finetune(noisy, _batches(x), steps=80, lr=1e-3, temperature=2.0,
                                     progress=False)
    gap1 = float(np.mean(np.abs(np.asarray(out(xt)) - teacher)))
    assert gap1 < 0.5 * gap0, (gap0, gap1)
    agree = np.mean(np.argmax(np.asarray(out(xt)), -1) == np.argmax(teacher, -1))
    assert agree > np.mean(np.argmax(np.asarray(noisy(xt)), -1) == np.argmax(teacher, -1))


def test_ctrl_c_keeps_the_best_params(digits):
    ex, cm, (x, y), (xt, yt) = digits
    masks = _kernel_masks(cm, 0.9)
    pruned = cm.with_params({k: cm.params[k] * m for k, m in masks.items()})
    batches = _batches(x, y)

    def interrupted():
        for i, b in enumerate(batches * 3):
            if i == 25:
                raise KeyboardInterrupt  # what Ctrl-C raises inside the loop
            yield b

    eval_data = [(xt, yt)]
    out, hist = tensorsmith.finetune(pruned, interrupted(), steps=1000, masks=masks, lr=2e-3,
                                     teacher=False, eval_data=eval_data, eval_every=5,
                                     progress=False)
    assert hist.interrupted and hist.steps == 25 and hist.kept == "best"
    losses = [e[1] for e in hist.evals]
    assert hist.best_loss == min(losses)
    assert hist.best_step == hist.evals[int(np.argmin(losses))][0]
    assert _ce(out, xt, yt) == pytest.approx(min(losses), rel=1e-4)


def test_gradual_schedule_reaches_its_sparsity(digits):
    ex, cm, (x, y), (xt, yt) = digits
    out, hist = tensorsmith.finetune(cm, _batches(x, y), steps=40, progress=False, alpha=0.5,
                                     schedule=polynomial(0.6, every=10, include=["params/Conv_*"]))
    assert [s for _, s in hist.sparsity][0] == 0.0
    assert hist.sparsity[-1][1] == pytest.approx(0.6 * (1 - (1 - 30 / 39) ** 3), rel=1e-6)
    for k in ("params/Conv_0/kernel", "params/Conv_1/kernel"):
        w = out.params[k]
        assert np.mean(w == 0) == pytest.approx(hist.sparsity[-1][1], abs=1.0 / w.size + 1e-9)
    assert np.count_nonzero(out.params["params/Dense_0/kernel"] == 0) == \
        np.count_nonzero(cm.params["params/Dense_0/kernel"] == 0)


def test_sparsity_schedule_shape():
    s = polynomial(0.8, every=1)
    assert s.sparsity(0, 101) == 0.0 and s.sparsity(100, 101) == pytest.approx(0.8)
    assert 0.0 < s.sparsity(10, 101) < s.sparsity(50, 101) < 0.8
    m = magnitude_mask(np.array([3.0, -1.0, 0.5, 2.0]), 0.5)
    np.testing.assert_array_equal(m, [True, False, False, True])


def test_bad_arguments_are_named(digits):
    ex, cm, (x, y), _ = digits
    data = _batches(x, y, n=2)
    with pytest.raises(UsageFailure, match="steps"):
        tensorsmith.finetune(cm, data, steps=0)
    with pytest.raises(UsageFailure, match="loss='hinge'"):
        tensorsmith.finetune(cm, data, steps=1, loss="hinge", teacher=False, progress=False)
    with pytest.raises(UsageFailure, match="mask of 'params/Conv_0/kernel' has shape"):
        tensorsmith.finetune(cm, data, steps=1, masks={"params/Conv_0/kernel": np.ones(3, bool)})
    with pytest.raises(UsageFailure, match="no param 'nope'"):
        tensorsmith.finetune(cm, data, steps=1, masks={"nope": np.ones(3, bool)})
    with pytest.raises(UsageFailure, match="no labels and there is no teacher"):
        tensorsmith.finetune(cm, _batches(x, n=2), steps=1, teacher=False, progress=False)
    with pytest.raises(UsageFailure, match="polynomial"):
        polynomial(1.5)


def test_mask_annotations_are_kept_in_force(digits):
    from tensorsmith.ir.annotations import Annotation
    ex, cm, (x, y), _ = digits
    k = "params/Dense_0/kernel"
    m = magnitude_mask(cm.params[k], 0.7)
    g = cm.graph.with_params({k: cm.params[k] * m}).with_annotations(
        add=[Annotation(k, "mask", {"sparsity": 0.7}, m)])
    masked = cm.with_graph(g)
    out, hist = tensorsmith.finetune(masked, _batches(x, y), steps=15, lr=3e-3, progress=False)
    assert set(hist.masked) == {k}
    assert np.all(out.params[k][~m] == 0.0) and np.all(out.params[k][m] != 0.0)
    assert not np.array_equal(out.params[k], masked.params[k])  # it did train
    np.testing.assert_array_equal(out.graph.annotation(k, "mask").array, m)


# --- layer-wise (hidden-state) distillation --------------------------------------------------
def _mlp3(p, x):
    h1 = jax.nn.relu(x @ p["l1"]["w"] + p["l1"]["b"])
    h2 = jax.nn.relu(h1 @ p["l2"]["w"] + p["l2"]["b"])
    return h2 @ p["l3"]["w"]


def _mlp3_setup():
    r = np.random.default_rng(0)
    w = lambda *s: (r.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    p = {"l1": {"w": w(8, 16), "b": (0.1 * r.standard_normal(16)).astype(np.float32)},
         "l2": {"w": w(16, 12), "b": (0.1 * r.standard_normal(12)).astype(np.float32)},
         "l3": {"w": w(12, 4)}}
    x = r.standard_normal((32, 8)).astype(np.float32)
    teacher = tensorsmith.compile(_mlp3, x, params=p, passes=[])
    # layer 1 loses half its neurons: h1 narrows, h2 keeps its shape (a matched hidden state)
    student = tensorsmith.compile(_mlp3, x, params=p,
                                  passes="prune{pattern=channel,sparsity=0.5,include=[l1/w]}")
    return p, x, teacher, student


def test_hidden_distillation_loss_is_the_relative_mse_of_matched_states_plus_the_output_loss():
    p, x, teacher, student = _mlp3_setup()
    _, hist = tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, distill="mse",
                                   hidden="auto", hidden_weight=0.5, progress=False)
    # float64 oracle: the student's own params (layer 1 sliced) against the dense model's
    sp = {k: np.asarray(v, np.float64) for k, v in student.params.items()}
    xs = x.astype(np.float64)
    h2_s = np.maximum(np.maximum(xs @ sp["l1/w"] + sp["l1/b"], 0) @ sp["l2/w"] + sp["l2/b"], 0)
    tp = {k: np.asarray(v, np.float64) for k, v in teacher.params.items()}
    h2_t = np.maximum(np.maximum(xs @ tp["l1/w"] + tp["l1/b"], 0) @ tp["l2/w"] + tp["l2/b"], 0)
    want = 0.5 * np.mean((h2_s - h2_t) ** 2) / np.mean(h2_t ** 2) + \
        np.mean((h2_s @ sp["l3/w"] - h2_t @ tp["l3/w"]) ** 2)
    assert hist.loss[0] == pytest.approx(want, rel=1e-4)
    _, plain = tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, distill="mse",
                                    progress=False)
    assert plain.loss[0] == pytest.approx(np.mean((h2_s @ sp["l3/w"] - h2_t @ tp["l3/w"]) ** 2), rel=1e-4)


def test_hidden_distillation_errors_name_the_value():
    p, x, teacher, student = _mlp3_setup()
    h1 = next(n.inputs[0].name for n in student.graph.nodes
              if n.op == "dot_general" and n.inputs[1].name == "l2/w")
    with pytest.raises(UsageFailure, match=rf"%{h1} is f32\[32,8\] in the student, f32\[32,16\] in the teacher"):
        tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, hidden=[h1], progress=False)
    with pytest.raises(UsageFailure, match=r"has no value %nope"):
        tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, hidden=["nope"], progress=False)
    with pytest.raises(UsageFailure, match=r"give teacher=None \(the source model\) or a CompiledModel"):
        tensorsmith.finetune(student, [(x,)], steps=1, teacher=lambda x: x, hidden="auto", progress=False)


# --- relational (in-batch similarity) distillation -------------------------------------------
def _similarity_kl64(s, t, temp):
    """float64 oracle: KL(teacher || student) of each row's softmax over its similarities."""
    def logp(e):
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        z = e @ e.T / temp
        np.fill_diagonal(z, -np.inf)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    lt, ls = logp(t), logp(s)
    off = ~np.eye(len(s), dtype=bool)
    return float(np.mean(np.sum(np.where(off, np.exp(lt) * (lt - ls), 0.0), -1)))


def test_similarity_distillation_is_the_kl_of_in_batch_neighbour_distributions():
    p, x, teacher, student = _mlp3_setup()
    sp = {k: np.asarray(v, np.float64) for k, v in student.params.items()}
    tp = {k: np.asarray(v, np.float64) for k, v in teacher.params.items()}
    xs = x.astype(np.float64)

    def out(q):
        h = np.maximum(np.maximum(xs @ q["l1/w"] + q["l1/b"], 0) @ q["l2/w"] + q["l2/b"], 0)
        return h @ q["l3/w"]
    s_out, t_out = out(sp), out(tp)
    _, hist = tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, distill="similarity",
                                   temperature=0.1, progress=False)
    want = _similarity_kl64(s_out, t_out, 0.1)
    assert want > 1e-3  # the pruned student's neighbours differ: the loss can tell
    assert hist.loss[0] == pytest.approx(want, rel=1e-3)
    cos = float(np.mean(1 - np.sum(s_out * t_out, -1) /
                        (np.linalg.norm(s_out, axis=-1) * np.linalg.norm(t_out, axis=-1))))
    _, both = tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher,
                                   distill="cosine+similarity", temperature=0.1, progress=False)
    assert both.loss[0] == pytest.approx(want + cos, rel=1e-3)
    _, own = tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, progress=False,
                                  distill=lambda s, t: jax.numpy.mean(jax.numpy.abs(s - t)))
    assert own.loss[0] == pytest.approx(float(np.mean(np.abs(s_out - t_out))), rel=1e-4)
    with pytest.raises(UsageFailure, match=r"distill='cosine\+kld'\): one of 'kl', 'mse', 'cosine', "
                                           r"'similarity', several joined by '\+'"):
        tensorsmith.finetune(student, [(x,)], steps=1, teacher=teacher, distill="cosine+kld",
                             progress=False)


def _mlp3_tokens(p, x, m):
    return _mlp3(p, x) * m[..., None]


def test_hidden_mask_leaves_padded_positions_out_of_the_hidden_loss():
    p, _, _, _ = _mlp3_setup()
    r = np.random.default_rng(1)
    x = r.standard_normal((4, 6, 8)).astype(np.float32)
    m = (np.arange(6)[None, :] < np.array([[6], [3], [1], [4]])).astype(np.int32)
    teacher = tensorsmith.compile(_mlp3_tokens, x, m, params=p, passes=[])
    student = tensorsmith.compile(_mlp3_tokens, x, m, params=p,
                                  passes="prune{pattern=channel,sparsity=0.5,include=[l1/w]}")
    sp = {k: np.asarray(v, np.float64) for k, v in student.params.items()}
    tp = {k: np.asarray(v, np.float64) for k, v in teacher.params.items()}
    xs, w = x.astype(np.float64), m[..., None].astype(np.float64)

    def h2(q):
        return np.maximum(np.maximum(xs @ q["l1/w"] + q["l1/b"], 0) @ q["l2/w"] + q["l2/b"], 0)
    out = np.mean(((h2(sp) @ sp["l3/w"] - h2(tp) @ tp["l3/w"]) * w) ** 2)
    want = np.sum(w * (h2(sp) - h2(tp)) ** 2) / np.sum(w * h2(tp) ** 2) + out
    unmasked = np.mean((h2(sp) - h2(tp)) ** 2) / np.mean(h2(tp) ** 2) + out
    assert abs(want - unmasked) > 1e-3 * want  # the padded positions do count without the mask
    for key in ("m", 1):
        _, hist = tensorsmith.finetune(student, [(x, m)], steps=1, teacher=teacher, distill="mse",
                                       hidden="auto", hidden_mask=key, progress=False)
        assert hist.loss[0] == pytest.approx(want, rel=1e-4)
    _, plain = tensorsmith.finetune(student, [(x, m)], steps=1, teacher=teacher, distill="mse",
                                    hidden="auto", progress=False)
    assert plain.loss[0] == pytest.approx(unmasked, rel=1e-4)
    # 'auto' beside a named value: the output before the mask (no layer reads it) joins the loss
    last = next(n.inputs[0].name for n in student.graph.nodes if n.op == "mul" and
                n.inputs[0].type.rank == 3 and n.inputs[0].type.shape[-1] == 4)
    _, both = tensorsmith.finetune(student, [(x, m)], steps=1, teacher=teacher, distill="mse",
                                   hidden=["auto", last], hidden_mask="m", progress=False)
    rel_last = np.sum(w * (h2(sp) @ sp["l3/w"] - h2(tp) @ tp["l3/w"]) ** 2) / \
        np.sum(w * (h2(tp) @ tp["l3/w"]) ** 2)
    h_part = np.sum(w * (h2(sp) - h2(tp)) ** 2) / np.sum(w * h2(tp) ** 2)
    assert both.loss[0] == pytest.approx((h_part + rel_last) / 2 + out, rel=1e-4)
    with pytest.raises(UsageFailure, match=r"hidden_mask='mk'\): _mlp3_tokens has inputs x, m \(closest: m\)"):
        tensorsmith.finetune(student, [(x, m)], steps=1, teacher=teacher, hidden="auto",
                             hidden_mask="mk", progress=False)
    with pytest.raises(UsageFailure, match=r"hidden_mask=\.\.\.\) weights the hidden-state loss: give hidden="):
        tensorsmith.finetune(student, [(x, m)], steps=1, teacher=teacher, hidden_mask="m", progress=False)
