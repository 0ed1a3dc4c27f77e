"""tensorsmith bisect on a quantized pipeline: the per-node debugger table and the first bad layer."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tensorsmith
from tensorsmith import codegen, examples
from tensorsmith.bisection import _with_outputs
from tensorsmith.cli import main
from tensorsmith.examples.train_digits_cnn import load_data

BASE = "default,fold-batchnorm,fuse,dce"
INT4 = "quantize{dtype=int4,weights=per_tensor}"


@pytest.fixture(scope="module")
def digits():
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    x_train = load_data()[0]
    cal = [(x_train[i:i + 32],) for i in range(0, 128, 32)]
    res = tensorsmith.bisect(ex.fn, x[:8], params=ex.params, batch_dim=True, data=[x],
                             labels=y, passes=f"{BASE},{INT4}", calibration=cal,
                             sqnr_threshold=18.0)
    return ex, x, cal, res


def _oracle_sqnr(ex, x, cal):
    """SQNR (dB) of each fused layer's output, float graph vs the quantized graph's dequantized
    output, summed over the calibration batches in float64: independent of the debugger."""
    fl = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, passes=BASE).graph
    q = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, calibration=cal,
                            passes=f"{BASE},{INT4}").graph
    names = [n.name for n in fl.nodes if n.op == "composite"]
    deq = []
    for name in names:  # the value downstream reads: dequantize(quantize(%name))
        qn = next(n for n in q.nodes if n.op == "quantize" and n.inputs[0].name == name)
        deq.append(next(n.name for n in q.nodes if n.op == "dequantize"
                        and n.inputs[0].name == qn.name))
    f_fn, q_fn = codegen.executor(_with_outputs(fl, names)), codegen.executor(_with_outputs(q, deq))
    sig, noise = np.zeros(len(names)), np.zeros(len(names))
    for (b,) in cal:
        for i, (a, c) in enumerate(zip(f_fn(b), q_fn(b))):
            a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
            sig[i] += np.sum(a * a)
            noise[i] += np.sum((a - c) ** 2)
    return {f"%{n}": 10 * np.log10(s / e) for n, s, e in zip(names, sig, noise)}, names


def test_python_api_table_matches_an_independent_sqnr_and_names_the_first_bad_layer(digits):
    ex, x, cal, res = digits
    assert res.worst_pass == "quantize"
    want, order = _oracle_sqnr(ex, x, cal)
    assert [r["node"] for r in res.quant] == sorted(want, key=want.get)  # worst first
    for r in res.quant:
        assert r["sqnr_db"] == pytest.approx(want[r["node"]], abs=0.02)
        assert r["weight_dtype"] == "i4" and r["weight_scale"][0] == r["weight_scale"][1]
        assert 0 <= r["input_clipped"] <= 1 and r["input_scale"] > 0
    below = [f"%{n}" for n in order if want[f"%{n}"] < 18.0]
    assert below, want  # int4 per-tensor weights: some layer is under 18 dB
    assert res.first_below()["node"] == below[0]
    assert res.first_below(-1.0) is None
    d = res.as_dict()
    assert d["quant_first_below"]["node"] == below[0] and len(d["quant"]) == 4
    json.dumps(d)  # the whole result is JSON


def test_text_lists_nodes_worst_first_and_the_first_layer_below_the_bar(digits):
    ex, x, cal, res = digits
    text = str(res)
    table = text.split("quantized nodes, worst SQNR first")[1]
    lines = [ln for ln in table.splitlines() if ln.startswith("%")]
    assert [ln.split()[0] for ln in lines] == [r["node"] for r in res.quant]
    assert "fused.conv_bias_relu" in table and "fused.dense_bias" in table
    bad = res.first_below()
    assert (f"first node below 18 dB (graph order): {bad['node']} ({bad['op']}, weight "
            f"@{bad['weight']}) at {bad['sqnr_db']:.1f} dB") in text
    res.sqnr_threshold = -1.0
    assert "every quantized node is at or above -1 dB" in str(res)


def test_cli_bisect_quantized_pipeline(capsys, tmp_path):
    x_train = load_data()[0]
    np.savez(tmp_path / "cal.npz", x=x_train[:128])
    out_json = tmp_path / "bisect.json"
    rc = main(["bisect", "digits-cnn", "--passes", f"{BASE},{INT4}", "--calibration",
               str(tmp_path / "cal.npz"), "--sqnr-threshold", "18", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "quantize <- worst" in out and "quantized nodes, worst SQNR first" in out
    d = json.loads(out_json.read_text())
    bad = d["quant_first_below"]
    assert f"first node below 18 dB (graph order): {bad['node']}" in out
    assert [r["sqnr_db"] for r in d["quant"]] == sorted(r["sqnr_db"] for r in d["quant"])
    # without --calibration the pipeline calibrates on the bisect data, and says so
    rc = main(["bisect", "digits-cnn", "--passes", f"{BASE},quantize", "--sqnr-threshold", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "calibrates on the bisect data" in out
    assert "every quantized node is at or above 0 dB" in out
