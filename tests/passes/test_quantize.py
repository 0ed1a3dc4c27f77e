"""quantize: IR text, numerics against a float64 numpy oracle, calibration, debugger, accuracy."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cleanup_helpers import ir  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith import codegen, examples  # noqa: E402
from tensorsmith.errors import PassFailure  # noqa: E402
from tensorsmith.ir import parse  # noqa: E402
from tensorsmith.passes import PassContext, run_pipeline  # noqa: E402
from tensorsmith.passes.quant_debug import format_report, quant_report  # noqa: E402

RNG = np.random.default_rng(0)

DENSE = """
    graph @main(%x: f32[N,6]) {
      param @w: f32[6,4]
      param @b: f32[4]
      %0: f32[N,4] = dot_general(%x, @w) {contracting_dims=((1,), (0,))}
      %1: f32[N,4] = add(%0, @b)
      %2: f32[N,4] = relu(%1)
      return %2
    }
    """


def _dense_params():
    return {"w": RNG.normal(size=(6, 4)).astype(np.float32),
            "b": RNG.normal(size=4).astype(np.float32)}


def _calib(n=4, batch=16, seed=1):
    r = np.random.default_rng(seed)
    return [(r.normal(size=(batch, 6)).astype(np.float32),) for _ in range(n)]


def _run_pass(text, params, pipeline, calibration=None, executor=codegen.executor):
    g = parse(ir(text), params=params)
    ctx = PassContext(executor=executor, calibration=calibration)
    out, hist = run_pipeline(g, pipeline, ctx)
    return g, out, ctx, hist


def _fq(x, scale, lo=-128, hi=127, axis=None):
    """float64 symmetric fake-quant (zero point 0)."""
    s = np.asarray(scale, np.float64)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return np.clip(np.round(x / s), lo, hi) * s


def test_dense_gets_weight_and_input_fake_quant_ir_text():
    params = _dense_params()
    _, out, ctx, _ = _run_pass(DENSE, params, "quantize", _calib())
    text = out.to_text()
    assert "param @w.scale: f32[4]" in text and "param @x.scale: f32[]" in text
    lines = [ln.strip() for ln in text.splitlines()]
    body = [ln.split("  #")[0] for ln in lines if ln.startswith("%")]
    assert body == [
        '%3: i8[N,6] = quantize(%x, @x.scale) {axis=1, dtype="i8"}',
        '%4: f32[N,6] = dequantize(%3, @x.scale) {axis=1}',
        '%5: i8[6,4] = quantize(@w, @w.scale) {axis=1, dtype="i8"}',
        '%6: f32[6,4] = dequantize(%5, @w.scale) {axis=1}',
        '%0: f32[N,4] = dot_general(%4, %6) {contracting_dims=((1,), (0,))}',
        '%1: f32[N,4] = add(%0, @b)',
        '%2: f32[N,4] = relu(%1)']
    assert 'annotate @w quant {dtype="i8", granularity="per_axis", role="weight"' in text
    assert parse(text, params=dict(out.params)).to_text() == text  # annotations round-trip
    assert any("quantized dot_general (weight, input) to int8" in str(r) for r in ctx.remarks)


def test_numerics_match_a_float64_oracle():
    params = _dense_params()
    cal = _calib()
    _, out, _, _ = _run_pass(DENSE, params, "quantize", cal)
    x = np.random.default_rng(9).normal(size=(8, 6)).astype(np.float32) * 1.5  # some clip
    got = codegen.executor(out)(x)[0]
    amax_x = max(np.abs(b[0]).max() for b in cal)
    w = params["w"].astype(np.float64)
    wq = _fq(w, np.abs(w).max(axis=0) / 127, axis=1)
    xq = _fq(x.astype(np.float64), amax_x / 127)
    want = np.maximum(xq @ wq + params["b"], 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, np.maximum(x @ params["w"] + params["b"], 0), atol=1e-4)


def test_fused_composite_is_quantized_at_its_boundaries():
    ex = examples.load("digits-cnn")
    x = ex.eval_data[0]
    cal = [(x[i:i + 40],) for i in range(0, 120, 40)]
    cm = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, calibration=cal,
                             passes="default,fold-batchnorm,fuse,dce,quantize")
    g = cm.graph
    for n in g.nodes:
        if n.op == "composite" and n.attrs["name"].startswith("fused."):
            # its input comes from a dequantize (through a reshape at most: no second
            # fake-quant on a tensor already on a grid), its output goes to a quantize
            src = g.producers[n.inputs[0].name]
            if src.op == "reshape":
                src = g.producers[src.inputs[0].name]
            assert src.op == "dequantize", n.attrs["name"]
            users = g.users[n.output.name]
            assert [u.op for u in users] == ["quantize"], n.attrs["name"]
            inner = [m.op for m in n.body.nodes]
            # inside: only the weight's pair, before the conv/dot; nothing between add and relu
            assert inner[:2] == ["quantize", "dequantize"] and inner.count("quantize") == 1
    assert len([a for a in g.annotations_of("quant") if a.attrs["role"] == "weight"]) == 4
    assert sum(n.op == "quantize" for n in g.nodes) == 5  # the image + 4 fused outputs
    # the report charts the debugger's rows (numeric remarks), worst SQNR first
    from tensorsmith.report import layer_metrics
    table = next(t for k, t in layer_metrics(cm.history).items() if k.endswith("quantize"))
    sqnr = [r["values"]["sqnr_db"] for r in table["rows"] if "sqnr_db" in r["values"]]
    assert len(sqnr) == 4 and sqnr == sorted(sqnr)


def test_calibration_runs_one_compiled_executor_for_all_batches():
    built = []

    def counting_executor(graph, jit=None):
        built.append(len(graph.outputs))
        return codegen.executor(graph, jit=jit)

    params = _dense_params()
    _run_pass(DENSE, params, "quantize{debug_batches=0}", _calib(n=10),
              executor=counting_executor)
    assert built == [1]  # one probe graph (observing %x), compiled once for 10 batches


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_calibration_names_input_and_batch(bad):
    params = _dense_params()
    cal = _calib(n=5)
    cal[3][0][2, 1] = bad
    with pytest.raises(PassFailure, match=r"calibration input %x has (NaN|Inf) in batch 3 "
                                          r"\(1 of 96 values\)"):
        _run_pass(DENSE, params, "quantize", cal)


def test_missing_calibration_says_how_to_give_it():
    with pytest.raises(PassFailure, match=r"pass 'quantize' needs calibration data: pass "
                                              r"compile\(\.\.\., calibration=\.\.\.\)"):
        _run_pass(DENSE, _dense_params(), "quantize", None)
    # weight-only and dynamic quantization need no calibration data
    _, out, _, _ = _run_pass(DENSE, _dense_params(), "quantize{activations=dynamic}", None)
    ops = [n.op for n in out.nodes]
    assert ops[:5] == ["abs", "reduce_max", "constant", "div", "constant"] and "quantize" in ops


def test_dynamic_activations_match_the_oracle():
    params = _dense_params()
    _, out, _, _ = _run_pass(DENSE, params, "quantize{activations=dynamic}", None)
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    w = params["w"].astype(np.float64)
    want = np.maximum(_fq(x.astype(np.float64), np.abs(x).max() / 127)
                      @ _fq(w, np.abs(w).max(axis=0) / 127, axis=1) + params["b"], 0)
    np.testing.assert_allclose(codegen.executor(out)(x)[0], want, rtol=1e-5, atol=1e-5)


def test_include_exclude_globs():
    text = DENSE.replace("return %2", "%7: f32[N,4] = dot_general(%2, @w2) "
                         "{contracting_dims=((1,), (0,))}\n      return %7") \
        .replace("param @b: f32[4]", "param @b: f32[4]\n      param @w2: f32[4,4]")
    params = {**_dense_params(), "w2": RNG.normal(size=(4, 4)).astype(np.float32)}
    _, out, ctx, _ = _run_pass(text, params, "quantize{exclude=[w2]}", _calib())
    quantized = {n.inputs[0].name for n in out.nodes if n.op == "quantize"}
    assert "w" in quantized and "w2" not in quantized
    assert any("%7: not quantized: excluded (matches ['w2'])" in str(r) for r in ctx.remarks)
    _, out2, _, _ = _run_pass(text, params, "quantize{include=[w2]}", _calib())
    assert {n.inputs[0].name for n in out2.nodes if n.op == "quantize"} == {"w2", "2"}


def test_bad_option_names_the_closest_choice():
    with pytest.raises(PassFailure, match="'in8' is not one of .*did you mean 'int8'"):
        _run_pass(DENSE, _dense_params(), "quantize{dtype=in8}", _calib())


def test_debugger_table_sqnr_against_an_independent_computation():
    params = _dense_params()
    cal = _calib(n=3)
    _, out, _, hist = _run_pass(DENSE, params, "quantize", cal)
    rows = quant_report(hist)
    assert len(rows) == 1 and rows[0]["node"] == "%0" and rows[0]["weight"] == "w"
    w = params["w"].astype(np.float64)
    amax_x = max(np.abs(b[0]).max() for b in cal)
    wq = _fq(w, np.abs(w).max(axis=0) / 127, axis=1)
    sig = noise = 0.0
    for (x,) in cal:
        f = x.astype(np.float64) @ w
        q = _fq(x.astype(np.float64), amax_x / 127) @ wq
        sig += np.sum(f * f)
        noise += np.sum((f - q) ** 2)
    assert rows[0]["sqnr_db"] == pytest.approx(10 * math.log10(sig / noise), abs=0.05)
    assert rows[0]["input_clipped"] == 0.0 and rows[0]["weight_clipped"] == 0.0
    assert rows[0]["input_scale"] == pytest.approx(amax_x / 127, rel=1e-6)
    assert "%0" in format_report(rows)


# --- accuracy on the bundled digits CNN ------------------------------------------------------
def _digits_accuracy(pipeline: str):
    from tensorsmith.examples.train_digits_cnn import load_data
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    x_train = load_data()[0]  # calibrate on training samples, score on held-out ones
    cal = [(x_train[i:i + 32],) for i in range(0, 128, 32)]
    cm = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, calibration=cal,
                             passes=pipeline)
    return float(np.mean(np.argmax(np.asarray(cm(x)), -1) == y)), cm


@pytest.fixture(scope="module")
def float_accuracy():
    return _digits_accuracy("default,fold-batchnorm,fuse,dce")[0]


@pytest.mark.parametrize("spec,max_drop", [
    ("quantize{dtype=int8,weights=per_channel,activations=per_tensor}", 0.005),
    ("quantize{dtype=fp8_e4m3}", 0.010)])
def test_digits_ptq_accuracy(spec, max_drop, float_accuracy):
    acc, cm = _digits_accuracy("default,fold-batchnorm,fuse,dce," + spec)
    assert acc >= float_accuracy - max_drop, (acc, float_accuracy)
    rows = quant_report(cm)
    assert len(rows) == 4 and [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    assert all(r["sqnr_db"] > 15 for r in rows)


def test_cli_calibration_npz_prints_the_debugger_table(capsys, tmp_path):
    from tensorsmith.cli import main
    ex = examples.load("digits-cnn")
    np.savez(tmp_path / "cal.npz", x=ex.eval_data[0][:96])
    rc = main(["compile", "digits-cnn", "--passes", "default,fold-batchnorm,fuse,dce,quantize",
               "--calibration", str(tmp_path / "cal.npz"), "--calibration-batch", "48",
               "-o", str(tmp_path / "out.tsx")])
    out = capsys.readouterr().out
    assert rc == 0
    table = out.split("quantization (SQNR of each quantized node vs float, worst first)")[1]
    assert table.count("fused.") == 4
    rc = main(["compile", "digits-cnn", "--passes", "quantize", "--calibration",
               str(tmp_path / "missing.npz")])
    assert rc == 2
    assert "--calibration" in capsys.readouterr().err


MLP = """
    graph @mlp(%x: f32[N,32]) {
      param @w1: f32[32,64]
      param @w2: f32[64,8]
      %0: f32[N,64] = dot_general(%x, @w1) {contracting_dims=((1,), (0,))}
      %1: f32[N,64] = relu(%0)
      %2: f32[N,8] = dot_general(%1, @w2) {contracting_dims=((1,), (0,))}
      return %2
    }
    """


@pytest.mark.parametrize("learn_scales", [False, True])
def test_qat_trains_through_fake_quant(learn_scales):
    """Straight-through gradients: fine-tuning the int4 model's weights (and, LSQ, its scales)
    through the fake-quant pairs brings it closer to the float model than PTQ left it."""
    import jax
    import jax.numpy as jnp
    import optax
    r = np.random.default_rng(3)
    params = {"w1": (r.normal(size=(32, 64)) / 5.6).astype(np.float32),
              "w2": (r.normal(size=(64, 8)) / 8).astype(np.float32)}
    g_float, g_q, _, _ = _run_pass(MLP, params, "quantize{dtype=int4,weights=per_tensor,"
                                                "activations=none}")
    f_float, f_q = codegen.to_jax(g_float), codegen.to_jax(g_q)
    names = list(g_q.params)
    p0 = [jnp.asarray(a) for a in g_q.params.values()]
    train = [i for i, n in enumerate(names) if learn_scales or not n.endswith(".scale")]
    x_test = r.normal(size=(512, 32)).astype(np.float32)
    teacher = f_float(tuple(g_float.params.values()), x_test)[0]

    def mse(p, x, want):
        return jnp.mean((f_q(tuple(p), x)[0] - want) ** 2)

    tp = [p0[i] for i in train]
    # scales move in small steps (LSQ): adam's step is about its learning rate
    labels = ["scale" if names[i].endswith(".scale") else "weight" for i in train]
    # QAT wants small steps: a weight moves across a 4-bit step only now and then
    opt = optax.multi_transform({"weight": optax.adam(3e-5), "scale": optax.adam(1e-5)}, labels)
    state = opt.init(tp)

    @jax.jit
    def step(tp, state, x):
        want = f_float(tuple(g_float.params.values()), x)[0]

        def loss(tp):
            p = list(p0)
            for i, v in zip(train, tp):
                p[i] = v
            return mse(p, x, want)
        grads = jax.grad(loss)(tp)
        updates, state = opt.update(grads, state, tp)
        return optax.apply_updates(tp, updates), state

    for _ in range(300):
        tp, state = step(tp, state, r.normal(size=(128, 32)).astype(np.float32))
    p = list(p0)
    for i, v in zip(train, tp):
        p[i] = v
    before, after = float(mse(p0, x_test, teacher)), float(mse(p, x_test, teacher))
    assert after < 0.7 * before, (before, after)
    if learn_scales:
        scale = names.index("w1.scale")
        assert float(p[scale]) != float(p0[scale])  # the LSQ gradient reached the scale


def test_onnx_cnn_with_a_depthwise_conv_quantizes_per_output_channel():
    """NCHW/OIHW layouts and a grouped (depthwise) conv: scales follow each kernel's O axis."""
    from onnx import TensorProto as T, helper as h, numpy_helper
    r = np.random.default_rng(5)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w1", r.normal(size=(8, 3, 3, 3)) / 4), ("b1", r.normal(size=8) * 0.1),
        ("dw", r.normal(size=(8, 1, 3, 3)) / 3), ("db", r.normal(size=8) * 0.1),
        ("fc", r.normal(size=(8, 4)) / 3)]]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "dw", "db"], ["c2"], pads=[1, 1, 1, 1], group=8),
             h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("GlobalAveragePool", ["r2"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = h.make_graph(nodes, "dw", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 10, 10])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    cal = [(r.normal(size=(16, 3, 10, 10)).astype(np.float32),) for _ in range(3)]
    cm = tensorsmith.compile(m, passes="default,fuse,dce,quantize", calibration=cal)
    fl = tensorsmith.compile(m, passes="default,fuse,dce")
    scales = {a.target: a.attrs for a in cm.graph.annotations_of("quant")
              if a.attrs["role"] == "weight"}
    assert {k: cm.graph.params[v["scale"]].shape for k, v in scales.items()} == \
        {"w1": (8,), "dw": (8,), "fc": (4,)}
    rows = quant_report(cm)
    assert len(rows) == 3 and all(row["sqnr_db"] > 25 for row in rows), rows
    x = r.normal(size=(8, 3, 10, 10)).astype(np.float32)
    got, want = np.asarray(cm(x)), np.asarray(fl(x))
    assert 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2)) > 25


def _ort_qdq_model(tmp_path):
    """A conv + matmul model quantized by onnxruntime's own static QDQ quantizer."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    r = np.random.default_rng(3)
    inits = [numpy_helper.from_array(r.normal(size=s).astype(np.float32), n)
             for n, s in [("conv_w", (8, 3, 3, 3)), ("conv_b", (8,)), ("fc_w", (6, 4))]]
    nodes = [h.make_node("Conv", ["img", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["pooled"]),
             h.make_node("MatMul", ["vec", "fc_w"], ["logits"])]
    graph = h.make_graph(nodes, "m", [h.make_tensor_value_info("img", T.FLOAT, [1, 3, 8, 8]),
                                      h.make_tensor_value_info("vec", T.FLOAT, [2, 6])],
                         [h.make_tensor_value_info("pooled", T.FLOAT, [1, 8, 8, 8]),
                          h.make_tensor_value_info("logits", T.FLOAT, [2, 4])], inits)
    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), src)
    batches = iter([{"img": r.normal(size=(1, 3, 8, 8)).astype(np.float32),
                     "vec": r.normal(size=(2, 6)).astype(np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return dst


def test_a_qdq_model_is_not_quantized_twice(tmp_path):
    path = _ort_qdq_model(tmp_path)
    r = np.random.default_rng(0)
    cal = [(r.normal(size=(1, 3, 8, 8)).astype(np.float32), r.normal(size=(2, 6)).astype(np.float32))]
    plain = tensorsmith.compile(str(path))
    cm = tensorsmith.compile(str(path), passes="default,quantize", calibration=cal)
    count = lambda g: sum(n.op == "quantize" for n in g.walk())  # noqa: E731
    assert count(cm.graph) == count(plain.graph)
    missed = [str(m) for rec in cm.history for m in rec.remarks if m.kind == "missed"]
    assert any("already reads a dequantized weight (a QDQ model)" in m for m in missed), missed


def test_quantize_keeps_the_grid_gptq_chose():
    r = np.random.default_rng(4)
    params = {"w1": r.normal(size=(32, 64)).astype(np.float32),
              "w2": r.normal(size=(64, 8)).astype(np.float32)}
    cal = [(r.normal(size=(64, 32)).astype(np.float32),) for _ in range(4)]
    _, g_gptq, _, _ = _run_pass(MLP, params, "gptq{bits=4,group_size=16}", cal)
    _, g_q, ctx, _ = _run_pass(MLP, params, "gptq{bits=4,group_size=16},"
                                            "quantize{dtype=int4,weights=per_channel,"
                                            "activations=none}", cal)
    x = r.normal(size=(16, 32)).astype(np.float32)
    # the weights already lie on gptq's grid: fake-quant on that grid changes nothing
    np.testing.assert_allclose(codegen.executor(g_q)(x)[0], codegen.executor(g_gptq)(x)[0],
                               rtol=1e-5, atol=1e-5)
    q_w1 = next(n for n in g_q.nodes if n.op == "quantize" and n.inputs[0].name == "w1")
    assert q_w1.attrs["block_size"] == 16 and q_w1.attrs["axis"] == 0
    ann = g_q.annotation("w1", "quant")
    assert ann.attrs["source"] == "gptq" and ann.attrs["dtype"] == "i4"
    assert any("@w1 keeps the i4 grid gptq chose" in str(m) for m in ctx.remarks)
    # without gptq, per-channel round-to-nearest is a different (coarser) grid
    _, g_rtn, _, _ = _run_pass(MLP, params, "quantize{dtype=int4,activations=none}", cal)
    assert not np.allclose(codegen.executor(g_rtn)(x)[0], codegen.executor(g_q)(x)[0], atol=1e-3)


def test_context_reuses_one_executor_per_graph_and_releases_it_after_the_pass():
    built = []

    def counting_executor(graph, jit=None):
        built.append(graph)
        return codegen.executor(graph, jit=jit)

    g = parse(ir(DENSE), params=_dense_params())
    ctx = PassContext(executor=counting_executor, calibration=_calib(n=3))
    x = _calib(n=1)[0][0]
    first = ctx.run(g, x)
    for _ in range(3):
        np.testing.assert_array_equal(ctx.run(g, x)[0], first[0])
    assert len(built) == 1  # ctx.run compiles a graph once, however often a pass runs it
    run_pipeline(g, "quantize", ctx)
    assert ctx._executors == {}  # released when the pass ended (no device params kept)


def test_mixed_precision_meets_the_budget_with_few_float_layers():
    budget = 22.0
    acc, cm = _digits_accuracy("default,fold-batchnorm,fuse,dce,"
                               f"quantize{{dtype=int4,activations=none,budget={budget}}}")
    mp = cm.history[-1].data["mixed_precision"]
    kept = [k[1:] for k in mp["float_layers"]]
    assert mp["met"] and 0 < len(kept) < 4
    # an independent measurement of the output SQNR on the calibration data
    from tensorsmith.examples.train_digits_cnn import load_data
    ex = examples.load("digits-cnn")
    x_cal = load_data()[0][:128]
    fl = tensorsmith.compile(ex.fn, x_cal[:8], params=ex.params, batch_dim=True,
                             passes="default,fold-batchnorm,fuse,dce")
    f, q = np.asarray(fl(x_cal), np.float64), np.asarray(cm(x_cal), np.float64)
    measured = 10 * np.log10(np.sum(f ** 2) / np.sum((f - q) ** 2))
    assert measured >= budget and measured == pytest.approx(mp["output_sqnr_db"], abs=0.05)
    rows = {r["node"]: r for r in quant_report(cm)}
    assert all(rows[f"%{k}"]["quantized"] is False for k in kept)
    assert all("alone_output_sqnr_db" in r for r in rows.values())
    # quantizing any one of the float layers as well misses the budget
    for k in kept:
        others = [o for o in kept if o != k]
        spec = ("quantize{dtype=int4,activations=none,sensitivity=true"
                + (f",exclude=[{','.join(others)}]" if others else "") + "}")
        _, cm_k = _digits_accuracy("default,fold-batchnorm,fuse,dce," + spec)
        assert cm_k.history[-1].data["output_sqnr_db"] < budget, k


def test_observers_clip_a_calibration_outlier_that_minmax_keeps():
    cal = _calib(n=4, batch=64)
    cal[2][0][5, 3] = 50.0  # one outlier among 1536 values
    scales = {}
    for obs in ("minmax", "percentile", "mse", "entropy"):
        _, _, _, hist = _run_pass(DENSE, _dense_params(), f"quantize{{observer={obs},"
                                  "percentile=99.9}", cal)
        row = quant_report(hist)[0]
        scales[obs] = row["input_scale"]
        assert (row["input_clipped"] > 0) == (obs != "minmax"), (obs, row)
    assert scales["minmax"] == pytest.approx(50.0 / 127, rel=1e-6)
    assert all(scales[o] < 0.5 * scales["minmax"] for o in ("percentile", "entropy")), scales
    # mse weighs the outlier's own error: one in 1536 values still pulls its range out
    assert scales["mse"] <= scales["minmax"]


def test_auto_observer_chooses_by_the_dense_layer_output_error():
    """observer=auto: the input scale is the candidate whose error reaches ``x @ w`` least,
    scored here in float64 numpy on every calibration row; a remark names the choice."""
    from tensorsmith.passes.observers import make_observer
    cal = _calib(n=4, batch=64)
    cal[2][0][5, 3] = 50.0
    params = _dense_params()
    _, _, ctx, hist = _run_pass(DENSE, params, "quantize{observer=auto}", cal)
    row = quant_report(hist)[0]
    obs = make_observer("auto", batches=len(cal))
    for (x,) in cal:
        obs.update(x)
    x = np.concatenate([b[0] for b in cal]).astype(np.float64)
    w = params["w"].astype(np.float64)
    errs = {}
    for name, (lo, hi) in obs.candidates("i8", "symmetric").items():
        s = float(np.float32(max(-lo, hi) / 127))
        errs[s] = np.sum(((np.clip(np.round(x / s), -128, 127) * s - x) @ w) ** 2)
    assert row["input_scale"] == pytest.approx(min(errs, key=errs.get), rel=1e-6)
    notes = [str(r) for rec in hist for r in rec.remarks.of_kind("note") if "auto" in str(r)]
    assert len(notes) == 1 and "%x takes the" in notes[0] and "reader outputs" in notes[0]


def test_auto_observer_is_a_named_choice():
    with pytest.raises(PassFailure, match="'autoo' is not one of .*did you mean 'auto'"):
        _run_pass(DENSE, _dense_params(), "quantize{observer=autoo}", _calib())


def test_per_token_dynamic_activations_match_the_oracle_and_stay_fake_quant_when_lowered():
    """activations=per_token: one run-time scale per row (max |x| of the row / 127), checked
    against float64 numpy; lower-quant cannot fold a per-row scale and says so."""
    params = _dense_params()
    _, out, _, hist = _run_pass(DENSE, params, "quantize{activations=per_token}", None)
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    x[2] *= 40  # one loud row: per tensor it would flatten the others
    w = params["w"].astype(np.float64)
    xs = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 127
    xq = np.clip(np.round(x / xs), -128, 127) * xs
    want = np.maximum(xq @ _fq(w, np.abs(w).max(axis=0) / 127, axis=1) + params["b"], 0)
    np.testing.assert_allclose(codegen.executor(out)(x)[0], want, rtol=1e-5, atol=1e-5)
    per_tensor = _run_pass(DENSE, params, "quantize{activations=dynamic}", None)[1]
    exact = np.maximum(x.astype(np.float64) @ w + params["b"], 0)
    err = lambda g: np.abs(codegen.executor(g)(x)[0] - exact)[[0, 1, 3, 4]].max()  # noqa: E731
    assert err(out) < 0.2 * err(per_tensor)
    _, low, _, hist = _run_pass(DENSE, params, "quantize{activations=per_token},lower-quant",
                                None)
    missed = [str(r) for rec in hist for r in rec.remarks.of_kind("missed")]
    assert any("no W8A8" in m and "not one shared per-tensor scale" in m for m in missed)
    np.testing.assert_allclose(codegen.executor(low)(x)[0], want, rtol=1e-5, atol=1e-5)


def test_sensitivity_equals_each_layer_quantized_alone_scored_in_numpy():
    """Each layer's sensitivity is the output SQNR (float64 numpy oracle) of the model with that
    layer alone quantized; ``sensitivity_batches`` picks how many calibration batches score it."""
    r = np.random.default_rng(5)
    params = {"w1": (r.normal(size=(32, 64)) / 5.6).astype(np.float32),
              "w2": (r.normal(size=(64, 8)) / 8).astype(np.float32)}
    cal = [(r.normal(size=(16, 32)).astype(np.float32),) for _ in range(4)]
    spec = "quantize{dtype=int4,weights=per_tensor,sensitivity=true,"
    g, _, _, hist = _run_pass(MLP, params, spec + "sensitivity_batches=2}", cal)
    alone = hist[-1].data["sensitivity"]["alone_output_sqnr_db"]
    assert hist[-1].data["sensitivity"]["batches"] == 2 and len(alone) == 2
    f = codegen.executor(g, jit=True)
    want = {}
    for layer in alone:
        _, q, _, _ = _run_pass(MLP, params, spec.replace("sensitivity=true,", "")
                               + f"include=[{layer[1:]}],debug_batches=0}}", cal)
        fq = codegen.executor(q, jit=True)
        a = np.concatenate([np.asarray(f(*b)[0], np.float64) for b in cal[:2]])
        b = np.concatenate([np.asarray(fq(*b)[0], np.float64) for b in cal[:2]])
        want[layer] = 10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2))
        assert alone[layer] == pytest.approx(want[layer], abs=0.01), layer
    assert list(alone) == sorted(want, key=want.get)  # most sensitive first
    # the same scores with debug_batches=2 (the default source of the count)
    _, _, _, hist2 = _run_pass(MLP, params, spec + "debug_batches=2}", cal)
    assert hist2[-1].data["sensitivity"]["alone_output_sqnr_db"] == alone
