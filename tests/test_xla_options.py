"""xla-options: XLA compiler options chosen by the pipeline reach every executable."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
import onnxruntime as ort
import pytest

import tensorsmith
from tensorsmith.errors import PassFailure, UsageFailure
from tensorsmith.passes import PassContext, PassOptionError, run_pipeline
from tensorsmith.passes.xla_options import YNN_OPTION
from tensorsmith.report import report_data

sys.path.insert(0, str(Path(__file__).parent / "onnx"))
import models  # noqa: E402

YNN_FUSION = '"kind":"__ynn_fusion"'  # XLA:CPU's backend config of a YNNPACK fusion


def dense(params, x):
    return jax.nn.relu(x @ params["w"] + params["b"])


_rng = np.random.default_rng(0)
P = {"w": _rng.standard_normal((64, 32)).astype(np.float32),
     "b": _rng.standard_normal(32).astype(np.float32)}


def _x(batch=8, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 64)).astype(np.float32)


def _oracle(x):
    return np.maximum(x.astype(np.float64) @ P["w"] + P["b"], 0)


def test_ynn_off_reaches_every_executable_and_keeps_results():
    x = _x()
    plain = tensorsmith.compile(dense, x, params=P, batch_dim=True, passes="default")
    off = tensorsmith.compile(dense, x, params=P, batch_dim=True,
                              passes="default,xla-options{ynn=off}")
    assert off.compiler_options == {YNN_OPTION: ""} and plain.compiler_options == {}
    # the executables that run the calls: XLA:CPU fuses the dot into YNNPACK only by default
    assert YNN_FUSION in plain.hlo(x)
    for batch in (8, 3):  # the warm-up's executable and one compiled at a later call
        xb = _x(batch, seed=batch)
        np.testing.assert_allclose(np.asarray(off(xb)), _oracle(xb), rtol=1e-5, atol=1e-5)
        assert YNN_FUSION not in off.hlo(xb)
    assert off.cache_info().compiles == 2
    assert YNN_FUSION not in off.hlo()  # the inspection path compiles with them too


def test_ynn_dot_matches_onnxruntime():
    model = models.mlp_dynamic()
    feeds = models.mlp_inputs(16, seed=3)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    for ynn in ("off", "dot"):
        cm = tensorsmith.compile(model, passes=f"default,xla-options{{ynn={ynn}}}")
        got = cm(*feeds.values())
        for g, e in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-4, atol=1e-5)


def test_options_are_recorded_in_history_report_and_leave_exports_alone(tmp_path):
    x = _x()
    cm = tensorsmith.compile(dense, x, params=P, passes="dce,xla-options{ynn=off},dce")
    recs = {r.index: r for r in cm.history}
    assert recs[1].compiler_options == {} and recs[2].compiler_options == {YNN_OPTION: ""}
    assert recs[3].compiler_options == {YNN_OPTION: ""}  # in force until a pass changes them
    assert recs[2].as_dict()["compiler_options"] == {YNN_OPTION: ""}
    assert [str(r) for r in recs[2].remarks] == ["[xla-options] applied: ynn=off"]
    assert report_data(cm)["compiler_options"] == {YNN_OPTION: ""}
    html = cm.report(tmp_path / "r.html").read_text()
    assert f"XLA options <code>{YNN_OPTION}=&#x27;&#x27;</code>" in html
    path = cm.export(tmp_path / "m.tsx")
    np.testing.assert_allclose(np.asarray(tensorsmith.load(path)(x)), _oracle(x),
                               rtol=1e-5, atol=1e-5)


def test_compile_options_override_the_pipelines():
    x = _x()
    cm = tensorsmith.compile(dense, x, params=P, passes="xla-options{ynn=off}",
                             compiler_options={YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"})
    assert cm.compiler_options == {YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert YNN_FUSION in cm.hlo(x)


# --- auto: measured, with an executor whose candidates differ on purpose --------------------
def _timed_executor(seconds: dict, log: list):
    """An executor whose runners sleep ``seconds[choice]`` a call (choice from the options)."""
    names = {None: "on", "": "off", "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT": "dot"}

    def executor(graph, jit=None, compiler_options=None):
        choice = names[(compiler_options or {}).get(YNN_OPTION)]
        log.append((choice, dict(compiler_options or {})))

        def run(*inputs):
            time.sleep(seconds[choice])
            return [np.zeros(1)]
        return run
    return executor


def _graph():
    return tensorsmith.trace(dense, _x(), params=P)


@pytest.mark.parametrize("fastest", ["off", "dot"])
def test_auto_keeps_the_fastest_candidate(fastest):
    seconds = {"on": 0.006, "off": 0.006, "dot": 0.006, fastest: 0.001}
    log = []
    ctx = PassContext(executor=_timed_executor(seconds, log))
    g = _graph()
    out, hist = run_pipeline(g, "xla-options{rounds=3,set=[xla_cpu_enable_fast_math=false]}", ctx)
    assert out is g  # the IR is not touched
    want = {"xla_cpu_enable_fast_math": "false",
            YNN_OPTION: "" if fastest == "off" else "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert hist.compiler_options == want
    assert sorted(c for c, _ in log) == ["dot", "off", "on"]  # each candidate built once
    assert all(o["xla_cpu_enable_fast_math"] == "false" for _, o in log)  # with the set options
    (remark,) = hist[0].remarks
    assert remark.kind == "applied" and remark.message.startswith(f"ynn=auto chose {fastest}: on ")
    data = dict(remark.data)
    assert data[f"{fastest}_ms"] < 2.5 < data["on_ms"]


def test_auto_keeps_the_default_unless_another_is_faster_by_the_margin():
    log = []
    ctx = PassContext(executor=_timed_executor({"on": 0.004, "off": 0.003, "dot": 0.005}, log))
    _, hist = run_pipeline(_graph(), "xla-options{rounds=3,margin=0.6}", ctx)
    assert hist.compiler_options == {}
    assert hist[0].remarks[0].kind == "note" and "chose on" in hist[0].remarks[0].message


def test_auto_needs_shapes_and_a_cpu_target():
    g = tensorsmith.trace(dense, _x(), params=P, batch_dim=True)  # symbolic batch, no example inputs
    log = []
    _, hist = run_pipeline(g, "xla-options", PassContext(executor=_timed_executor({}, log)))
    assert hist.compiler_options == {} and not log
    assert hist[0].remarks[0].kind == "missed" and "symbolic dims" in hist[0].remarks[0].message
    ctx = PassContext(executor=_timed_executor({}, log), target="gpu")
    _, hist = run_pipeline(_graph(), "xla-options{ynn=off}", ctx)
    assert hist.compiler_options == {} and not log
    assert "target 'gpu' keeps XLA's defaults" in hist[0].remarks[0].message


def test_auto_on_a_real_model_times_the_example_inputs():
    x = _x()
    cm = tensorsmith.compile(dense, x, params=P, batch_dim=True, passes="xla-options{rounds=1}")
    (remark,) = cm.history[0].remarks
    assert "the example inputs (8x64)" in remark.message
    assert {"on_ms", "off_ms", "dot_ms"} <= set(dict(remark.data))
    np.testing.assert_allclose(np.asarray(cm(x)), _oracle(x), rtol=1e-5, atol=1e-5)


# --- bad options ------------------------------------------------------------------------
def test_bad_xla_option_names_name_the_closest_valid_one():
    x = _x()
    typo = "xla_cpu_enable_fast_mat=true"
    hint = "(did you mean 'xla_cpu_enable_fast_math'?)"
    with pytest.raises(UsageFailure, match=r"pass 'xla-options' option 'set': unknown XLA "
                       r"compiler option 'xla_cpu_enable_fast_mat' " + re_escape(hint)):
        tensorsmith.compile(dense, x, params=P, passes=f"xla-options{{set=[{typo}]}}")
    with pytest.raises(UsageFailure, match="set by pass xla-options " + re_escape(hint)):
        tensorsmith.compile(dense, x, params=P, passes=f"xla-options{{ynn=off,set=[{typo}]}}")
    with pytest.raises(UsageFailure, match=r"in compile\(compiler_options=...\) " + re_escape(hint)):
        tensorsmith.compile(dense, x, params=P, compiler_options={"xla_cpu_enable_fast_mat": True})
    with pytest.raises(UsageFailure, match="xla_cpu_enable_fast_math='maybe'.*not a valid bool"):
        tensorsmith.compile(dense, x, params=P, compiler_options={"xla_cpu_enable_fast_math": "maybe"})


def test_bad_pass_options_are_refused_before_any_work():
    x = _x()
    with pytest.raises(PassOptionError, match=r"option 'ynn': 'of' is not one of .*did you mean 'off'"):
        tensorsmith.compile(dense, x, params=P, passes="xla-options{ynn=of}")
    with pytest.raises(PassOptionError, match=r"has no option 'yn' \(did you mean 'ynn'\?\)"):
        tensorsmith.compile(dense, x, params=P, passes="xla-options{yn=off}")
    with pytest.raises(PassFailure, match=r"'fast_math' is not KEY=VALUE"):
        tensorsmith.compile(dense, x, params=P, passes="xla-options{set=[fast_math]}")


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


def test_auto_stops_timing_a_candidate_that_cannot_win():
    log, calls = [], {"on": 0, "off": 0, "dot": 0}
    base = _timed_executor({"on": 0.002, "off": 0.03, "dot": 0.003}, log)

    def executor(graph, jit=None, compiler_options=None):
        run = base(graph, jit, compiler_options)
        choice = log[-1][0]

        def counted(*inputs):
            calls[choice] += 1
            return run(*inputs)
        return counted
    _, hist = run_pipeline(_graph(), "xla-options{rounds=5}", PassContext(executor=executor))
    assert hist.compiler_options == {}
    # compile + sizing + one round for the 15x slower candidate; every round for the others
    assert calls["off"] == 3 and calls["on"] > 5 and calls["dot"] > 5, calls


# --- the CLI ----------------------------------------------------------------------------
def test_cli_xla_option(capsys, tmp_path):
    from tensorsmith import cli
    rc = cli.main(["compile", "--passes", "dce", "--repeats", "0", "-o", str(tmp_path / "a.tsx"),
                   "--xla-option", f"{YNN_OPTION}="])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"xla       {YNN_OPTION}=''" in out.splitlines()
    rc = cli.main(["compile", "--passes", "dce", "--repeats", "0", "-o", str(tmp_path / "b.tsx"),
                   "--xla-option", "xla_cpu_enable_fast_mat=true"])
    out, err = capsys.readouterr()
    assert rc != 0 and "did you mean 'xla_cpu_enable_fast_math'" in err, err
    assert not (tmp_path / "b.tsx").exists()
    rc = cli.main(["compile", "--xla-option", "fast_math", "-o", str(tmp_path / "c.tsx")])
    out, err = capsys.readouterr()
    assert rc != 0 and "--xla-option 'fast_math': expected KEY=VALUE" in err, err
