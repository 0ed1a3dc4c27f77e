"""Pruning that holds accuracy: the digits CNN (held-out accuracy vs dense) and all-MiniLM-L6-v2
(embedding cosine and nearest-neighbour agreement vs dense on held-out sentences), with
fine-tuning and distillation (``tensorsmith.finetune``), FLOPs and interleaved latency.

Digits CNN (bundled; trained on the scikit-learn digits, held-out split of 360 images):
  - 50% unstructured magnitude pruning (one threshold over all weights), no fine-tuning;
  - 80% unstructured (global) + fine-tuning with distillation from the dense model (masks in
    force);
  - 50% channels (removed for real) + fine-tuning with distillation; FLOPs vs dense.
MiniLM (optional extra ``tensorsmith[minilm]``; skipped with a message when absent): 2 of 12
heads and 30% of each FFN's neurons removed per layer, chosen and compensated on calibration
sentences (``criterion=obs,reconstruct=true,mask_input=attention_mask``), then distilled
(cosine loss on the embedding + relative MSE on every block's input and the last token
states, padding left out; best step on a validation split of the training modules' prose).
Calibration and distillation text: ``sentences.unlabelled()``, the docstrings and comments of
the standard library outside the held-out modules' packages (``--minilm-corpus training``: the
training modules' prose only, as before); evaluation on the held-out modules' prose. With an
ablation of each ingredient (``--no-ablation``: the full recipe only).

  python benchmarks/prune.py [--only digits|minilm] [--digits-steps 600] [--minilm-steps 4000]
                             [--minilm-length 32] [--minilm-eval 256] [--minilm-lr 1e-4]
                             [--minilm-calibration 8000] [--minilm-corpus unlabelled|training]
                             [--minilm-hidden auto+final-masked] [--minilm-distill cosine]
                             [--minilm-reconstruct true|sequential] [--no-ablation]
                             [--rounds 30] [--out benchmarks/results/prune.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).parent / "results" / "prune.json"


def _accuracy(cm, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(cm(x)), -1) == y))


def _flops(cm, batch: int) -> int:
    from tensorsmith import ir
    g = cm.graph
    symbols = {str(d): batch for v in g.inputs for d in v.type.shape if not isinstance(d, int)}
    return int(ir.graph_stats(g, symbols).flops)


def _batches(x, y, size: int, seed: int = 0):
    """Shuffled full batches of one epoch (a list: finetune cycles it)."""
    order = np.random.default_rng(seed).permutation(len(x))
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(x) - size + 1, size)]


def _interleaved(fns: dict, args, rounds: int) -> dict:
    """Median ms per call of each function, calls alternating (after one warm-up call each)."""
    import jax
    for f in fns.values():
        jax.block_until_ready(f(*args))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def digits(steps: int, rounds: int) -> dict:
    """The three digits CNN settings against the dense model."""
    import tensorsmith
    from tensorsmith import examples
    from tensorsmith.examples.train_digits_cnn import load_data

    ex = examples.load("digits-cnn")
    x_train, x_test, y_train, y_test = load_data()
    compile_ = lambda passes: tensorsmith.compile(ex.fn, x_test[:8], params=ex.params,  # noqa: E731
                                                  batch_dim=True, passes=passes)
    dense = compile_(None)
    base = _accuracy(dense, x_test, y_test)
    out = {"held_out": int(len(y_test)), "dense_accuracy": base, "dense_flops_batch64": _flops(dense, 64)}
    train = _batches(x_train, y_train, 64)

    def tuned(cm):
        t0 = time.perf_counter()
        res, hist = tensorsmith.finetune(cm, train, steps=steps, temperature=2.0, alpha=0.5,
                                         lr=1e-3, progress=False)
        return res, hist, time.perf_counter() - t0

    def zeros(cm):
        w = [v for k, v in cm.params.items() if v.ndim >= 2]
        return float(sum(int(np.sum(a == 0)) for a in w) / sum(a.size for a in w))

    def per_layer(cm):
        return {k: round(float(np.mean(v == 0)), 4) for k, v in cm.params.items() if v.ndim >= 2}

    cm = compile_("prune{sparsity=0.5,scope=global}")
    acc = _accuracy(cm, x_test, y_test)
    out["unstructured_50_no_finetune"] = {
        "pipeline": cm.pipeline, "weight_sparsity": zeros(cm), "per_layer": per_layer(cm), "accuracy": acc,
        "drop_points": 100 * (base - acc), "target_drop_points": 1.0, "met": 100 * (base - acc) <= 1.0}

    cm = compile_("prune{sparsity=0.8,scope=global}")
    acc0 = _accuracy(cm, x_test, y_test)
    res, hist, secs = tuned(cm)
    acc = _accuracy(res, x_test, y_test)
    out["unstructured_80_finetune_distill"] = {
        "pipeline": cm.pipeline, "weight_sparsity": zeros(res), "per_layer": per_layer(res),
        "accuracy_before_finetune": acc0,
        "accuracy": acc, "drop_points": 100 * (base - acc), "finetune_steps": hist.steps,
        "finetune_seconds": secs, "masked_params": len(hist.masked), "target_drop_points": 1.0,
        "met": 100 * (base - acc) <= 1.0}

    cm = compile_("prune{sparsity=0.5,pattern=channel}")
    acc0 = _accuracy(cm, x_test, y_test)
    res, hist, secs = tuned(cm)
    acc = _accuracy(res, x_test, y_test)
    flops = _flops(res, 64) / out["dense_flops_batch64"]
    lat = _interleaved({"dense": dense, "pruned": res}, (x_test[:64],), rounds)
    out["channel_50_finetune_distill"] = {
        "pipeline": cm.pipeline, "accuracy_before_finetune": acc0, "accuracy": acc,
        "drop_points": 100 * (base - acc), "flops_ratio": flops,
        "params_ratio": sum(v.size for v in res.params.values()) / sum(v.size for v in dense.params.values()),
        "latency_ms_batch64": lat, "finetune_steps": hist.steps, "finetune_seconds": secs,
        "target_drop_points": 2.0, "target_flops_ratio": 0.55,
        "met": 100 * (base - acc) <= 2.0 and flops <= 0.55}
    return out


def _embed(cm, data, batch: int = 64) -> np.ndarray:
    ids, mask = data
    return np.concatenate([np.asarray(cm(ids[i:i + batch], mask[i:i + batch]))
                           for i in range(0, len(ids), batch)]).astype(np.float64)


def _neighbours(e: np.ndarray) -> np.ndarray:
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, -1)


def _minilm_setting(ex, passes: str, example, cal, test, ref, nn_ref) -> tuple:
    """(compiled model, its row of figures) for one pruning pipeline, before fine-tuning."""
    import tensorsmith
    t0 = time.perf_counter()
    cm = tensorsmith.compile(ex.fn, *example, params=ex.params, batch_dim=True, passes=passes,
                             calibration=cal)
    secs = time.perf_counter() - t0
    e = _embed(cm, test)
    return cm, {"pipeline": passes, "compile_seconds": secs,
                "mean_cosine": float(np.mean(np.sum(e * ref, -1))),
                "nn_agreement": float(np.mean(_neighbours(e) == nn_ref))}


def minilm(steps: int, rounds: int, length: int = 32, n_eval: int = 256, lr: float = 1e-4,
           n_cal: int = 8000, ablation: bool = True, recipe: str = "true",
           corpus: str = "unlabelled", distill: str = "cosine",
           temperature: float = 0.05, batch: int = 16, hidden: str = "auto+final-masked") -> dict:
    """30% FFN neurons + 2/12 heads per layer, distilled; cosine and NN agreement vs dense.

    On calibration sentences (padding left out: ``mask_input=attention_mask``), heads and
    then neurons are removed greedily by the error the re-fitted layer reading them is left
    with (``criterion=obs``), that layer is re-fitted by least squares (``reconstruct=true``
    on the dense model's statistics, or ``recipe='sequential'``: in graph order, on the pruned
    model's input, to the dense model's output plus the residual stream's error),
    then the model is distilled from the dense one on its final embedding (``distill``) and
    on hidden states (``hidden``: 'auto' = every block's input, '+final' = the last token
    states, '-masked' = padding left out). ``corpus``: 'unlabelled' (standard-library
    docstrings and comments, shuffled; the first ``n_cal`` calibrate) or 'training' (the
    training modules' prose). With ``ablation``, each ingredient's share is measured too (same
    data, same steps).
    """
    try:
        from tensorsmith import examples
        ex = examples.load("minilm")
    except ImportError as e:  # MissingExtraError: the optional extra is not installed
        return {"skipped": str(e)}
    import tensorsmith
    from tensorsmith.examples.minilm.sentences import held_out, training

    test = ex.tokenize(held_out(limit=n_eval), length=length)
    train_texts = training()
    train = ex.tokenize(train_texts, length=length)
    # the last 128 training sentences pick the best step (validation); the test set is unseen
    n_fit = len(train[0]) - 128
    val = [(train[0][i:i + 64], train[1][i:i + 64]) for i in range(n_fit, len(train[0]) - 63, 64)]
    if corpus == "training":  # the prose sentences of the training modules, in order
        pool = (train[0][:n_fit], train[1][:n_fit])
    else:  # docstrings and comments of the whole standard library but the held-out packages
        from tensorsmith.examples.minilm.sentences import unlabelled
        validation = set(train_texts[n_fit:])
        pool = ex.tokenize([t for t in unlabelled() if t not in validation], length=length)
        order = np.random.default_rng(0).permutation(len(pool[0]))
        pool = (pool[0][order], pool[1][order])
    n_pool = len(pool[0])
    cal = [(pool[0][i:i + 32], pool[1][i:i + 32]) for i in range(0, min(n_cal, n_pool) - 31, 32)]
    batches = [(pool[0][i:i + batch], pool[1][i:i + batch]) for i in range(0, n_pool - batch + 1, batch)]
    example = (train[0][:16], train[1][:16])
    t0 = time.perf_counter()
    dense = tensorsmith.compile(ex.fn, *example, params=ex.params, batch_dim=True)
    dense_s = time.perf_counter() - t0
    ref = _embed(dense, test)
    nn_ref = _neighbours(ref)
    ffn = "prune{{sparsity=0.3,pattern=channel,criterion={c}{r},include=[layers/*/intermediate/kernel]}}"
    head = "prune{{sparsity=0.17,pattern=head,criterion={c}{r}}}"

    def passes(c, r, mask=False):  # after the default pipeline: value names match the dense model's
        rec = (f",reconstruct={'true' if r is True else r}" if r else "") + \
            (",mask_input=attention_mask" if mask else "")
        return f"default,{head.format(c=c, r=rec)},{ffn.format(c=c, r=rec)}"

    def run(cm, hidden):
        import optax
        mask = None
        if hidden is not None and hidden.endswith("-masked"):  # padding left out of the loss
            hidden, mask = hidden[:-len("-masked")], "attention_mask"
        if hidden == "auto+final":  # + the last token states (the ones mean pooling reads)
            hidden = ["auto"] + [n.inputs[0].name for n in cm.graph.nodes if n.op == "reduce_sum"
                                 and tuple(n.attrs["axes"]) == (1,) and n.inputs[0].type.rank == 3
                                 and n.inputs[0].type.shape[-1] != 1]
        # warm up (Adam's first steps would undo the reconstruction), then cosine decay
        sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, min(20, steps // 10)), steps, lr / 10)
        t0 = time.perf_counter()
        tuned, hist = tensorsmith.finetune(cm, batches, steps=steps, teacher=dense, distill=distill,
                                           temperature=temperature,
                                           hidden=hidden, hidden_mask=mask,
                                           optimizer=optax.adam(sched),
                                           trainable=["layers/*"],
                                           eval_data=val, eval_every=max(1, steps // 10),
                                           progress=False)
        secs = time.perf_counter() - t0
        e = _embed(tuned, test)
        return tuned, hist, secs, {"mean_cosine": float(np.mean(np.sum(e * ref, -1))),
                                   "nn_agreement": float(np.mean(_neighbours(e) == nn_ref)),
                                   "kept_step": hist.best_step, "finetune_steps": hist.steps,
                                   "finetune_seconds": secs}

    ablation_rows = {}
    if ablation:
        for name, c, r, m in (("l2", "l2", False, False), ("activation", "activation", False, False),
                              ("activation_reconstruct", "activation", True, False),
                              ("obs_reconstruct", "obs", True, False)):
            _, ablation_rows[f"{name}_before_finetune"] = _minilm_setting(
                ex, passes(c, r, m), example, cal, test, ref, nn_ref)
        if recipe != "true":  # the independent re-fit against the recipe
            _, ablation_rows["obs_reconstruct_masked_before_finetune"] = _minilm_setting(
                ex, passes("obs", True, True), example, cal, test, ref, nn_ref)
        if recipe != "sequential":  # the sequential re-fit against the recipe
            _, ablation_rows["obs_sequential_masked_before_finetune"] = _minilm_setting(
                ex, passes("obs", "sequential", True), example, cal, test, ref, nn_ref)
    pruned, row = _minilm_setting(ex, passes("obs", recipe, True), example, cal, test, ref, nn_ref)
    tag = "obs_reconstruct_masked" if recipe == "true" else f"obs_{recipe}_masked"
    ablation_rows[f"{tag}_before_finetune"] = row
    if ablation:
        ablation_rows[f"{tag}_output_distill"] = run(pruned, None)[3]
        if hidden != "auto":
            ablation_rows[f"{tag}_output_and_auto_hidden_distill"] = run(pruned, "auto")[3]
    tuned, hist, ft_s, final = run(pruned, hidden)
    ablation_rows[f"{tag}_output_and_{hidden.replace('+', '_').replace('-', '_')}_distill"] = final
    # the same model on the other disjoint slices of n_eval held-out sentences: how much the
    # nearest-neighbour figure moves with the sentences drawn
    others = held_out()[n_eval:]
    slices = []
    for i in range(0, len(others) - n_eval + 1, n_eval):
        part = ex.tokenize(others[i:i + n_eval], length=length)
        d, p = _embed(dense, part), _embed(tuned, part)
        slices.append({"sentences": f"{n_eval + i}-{2 * n_eval + i}",
                       "mean_cosine": float(np.mean(np.sum(d * p, -1))),
                       "nn_agreement": float(np.mean(_neighbours(p) == _neighbours(d)))})
    heads = [v.shape[1] // 32 for k, v in tuned.params.items() if k.endswith("attention/query/kernel")]
    ffn_n = [v.shape[1] for k, v in tuned.params.items() if k.endswith("intermediate/kernel")]
    lat = _interleaved({"dense": dense, "pruned": tuned}, (test[0][:32], test[1][:32]), rounds)
    cos, agree = final["mean_cosine"], final["nn_agreement"]
    return {
        "held_out_sentences": int(len(ref)), "corpus": corpus, "distill_sentences": n_pool,
        "validation_sentences": int(len(train[0]) - n_fit), "distill": distill,
        "temperature": temperature, "batch": batch, "hidden": hidden,
        "calibration_sentences": int(sum(len(b[0]) for b in cal)),
        "sequence_length": length, "pipeline": pruned.pipeline, "reconstruct": recipe,
        "heads_per_layer": heads,
        "ffn_neurons_per_layer": ffn_n,
        "params_ratio": sum(v.size for k, v in tuned.params.items() if k.startswith("layers/")) /
                        sum(v.size for k, v in dense.params.items() if k.startswith("layers/")),
        "flops_ratio_batch32": _flops(tuned, 32) / _flops(dense, 32),
        "mean_cosine_before_finetune": row["mean_cosine"],
        "nn_agreement_before_finetune": row["nn_agreement"],
        "mean_cosine": cos, "nn_agreement": agree, "finetune_steps": hist.steps,
        "kept_step": hist.best_step, "validation_loss": [(s, round(v, 5)) for s, v, _ in hist.evals],
        "finetune_seconds": ft_s, "compile_seconds": row["compile_seconds"],
        "dense_compile_seconds": dense_s, "ablation": ablation_rows,
        "other_held_out_slices": slices,
        f"latency_ms_batch32_len{length}": lat, "finetune_lr": lr,
        "truncated_held_out": int(np.sum(test[1][:, -1] == 1)), "latency_ratio": lat["pruned"] / lat["dense"],
        "target_cosine": 0.97, "target_nn_agreement": 0.90, "met": cos >= 0.97 and agree >= 0.90}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("digits", "minilm"), default=None)
    ap.add_argument("--digits-steps", type=int, default=600)
    ap.add_argument("--minilm-steps", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--minilm-length", type=int, default=32)
    ap.add_argument("--minilm-eval", type=int, default=256)
    ap.add_argument("--minilm-lr", type=float, default=1e-4)
    ap.add_argument("--minilm-calibration", type=int, default=8000)
    ap.add_argument("--minilm-corpus", choices=("unlabelled", "training"), default="unlabelled",
                    help="sentences to calibrate and distil on: the standard library's docstrings "
                         "and comments (held-out packages left out), or the training modules' prose")
    ap.add_argument("--minilm-distill", default="cosine",
                    help="finetune(distill=...) on the embedding")
    ap.add_argument("--minilm-temperature", type=float, default=0.05)
    ap.add_argument("--minilm-batch", type=int, default=16)
    ap.add_argument("--minilm-hidden", default="auto+final-masked",
                    choices=("auto", "auto-masked", "auto+final", "auto+final-masked"),
                    help="hidden states distilled: every block's input ('auto'), + the last token "
                         "states ('+final'); '-masked': padding positions left out")
    ap.add_argument("--no-ablation", action="store_true",
                    help="MiniLM: only the full recipe")
    ap.add_argument("--minilm-reconstruct", choices=("true", "sequential"), default="true",
                    help="MiniLM recipe: independent re-fits on dense statistics, or sequential")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    import jax
    result = {"load_average_1min": os.getloadavg()[0], "backend": jax.default_backend()}
    if args.only in (None, "digits"):
        result["digits_cnn"] = digits(args.digits_steps, args.rounds)
        print(json.dumps({"digits_cnn": result["digits_cnn"]}), flush=True)
    if args.only in (None, "minilm"):
        result["minilm"] = minilm(args.minilm_steps, max(5, args.rounds // 3), args.minilm_length,
                                  args.minilm_eval, args.minilm_lr, args.minilm_calibration,
                                  not args.no_ablation, args.minilm_reconstruct,
                                  args.minilm_corpus, args.minilm_distill, args.minilm_temperature,
                                  args.minilm_batch, args.minilm_hidden)
        print(json.dumps({"minilm": result["minilm"]}), flush=True)
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(args.out, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent))
    sys.exit(main())
