"""The `tensorsmith` command: compile/inspect/passes/bisect, and its one-line errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorsmith
from tensorsmith import cli, examples, ir
from tensorsmith.ir import graph_stats
from tensorsmith.passes import PASSES, PIPELINES, format_pipeline, parse_pipeline

USER_MODULE = '''
import jax, jax.numpy as jnp, numpy as np

def apply(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]

class Tiny:
    name = "tiny"
    fn = staticmethod(apply)
    def __init__(self):
        r = np.random.default_rng(7)
        self.params = {"w1": r.standard_normal((6, 12)).astype(np.float32),
                       "w2": r.standard_normal((12, 3)).astype(np.float32)}
        self.example_inputs = (r.standard_normal((4, 6)).astype(np.float32),)
        x = r.standard_normal((50, 6)).astype(np.float32)
        y = np.asarray(apply(self.params, x)).argmax(-1)
        y[:7] = (y[:7] + 1) % 3  # some wrong labels, so accuracy is not trivially 100%
        self.eval_data = (x, y)

def make():
    return Tiny()

not_a_model = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `tsm_user_models` in the current directory, importable as MODEL module:attr."""
    (tmp_path / "tsm_user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the cwd; undo afterwards
    monkeypatch.delitem(sys.modules, "tsm_user_models", raising=False)
    yield tmp_path
    sys.modules.pop("tsm_user_models", None)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _row(out: str, label: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(label + "  ") or ln.startswith(label + " "))
    return re.split(r"\s{2,}", line.strip())


def test_default_compile_end_to_end(tmp_path):
    """`python -m tensorsmith compile` with no MODEL: digits-cnn, default pipeline, artifact."""
    art = tmp_path / "d.tsx"
    done = subprocess.run([sys.executable, "-m", "tensorsmith", "compile", "-o", str(art),
                           "--repeats", "3", "--dump-ir", str(tmp_path / "ir")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"pipeline  {format_pipeline(parse_pipeline('default'))}" in out

    ex = examples.load("digits-cnn")
    source = tensorsmith.trace(ex.fn, *ex.example_inputs, params=ex.params, batch_dim="N")
    dumps = sorted((tmp_path / "ir").glob("*.tsir"))
    assert [p.name for p in dumps][0] == "00-source.tsir"
    assert ir.load(dumps[0]).to_text().split("\n", 1)[1] == source.to_text().split("\n", 1)[1]
    final = ir.load(dumps[-1])
    s, f = graph_stats(source), graph_stats(final)
    assert _row(out, "nodes")[1:3] == [f"{s.nodes:,}", f"{f.nodes:,}"]
    assert _row(out, "params")[1:3] == [f"{s.params:,}", f"{f.params:,}"]

    # accuracy printed for the JAX function and the compiled model, measured here again
    x, y = ex.eval_data
    acc = float(np.mean(np.asarray(ex.fn(ex.params, x)).argmax(-1) == y))
    m = re.search(r"accuracy on (\d+) held-out samples: source ([\d.]+)%  compiled ([\d.]+)%", out)
    assert m and int(m.group(1)) == len(y) and float(m.group(2)) == pytest.approx(100 * acc, abs=0.006)
    assert re.search(r"latency \(batch \d+, median of 3 interleaved runs, cpu\): "
                     r"jax.jit\(fn\) [\d.]+ ms  compiled [\d.]+ ms", out)
    assert f"artifact  {art}" in out
    np.testing.assert_allclose(np.asarray(tensorsmith.load(art)(x)), np.asarray(ex.fn(ex.params, x)),
                               rtol=1e-4, atol=1e-4)


def test_passes_lists_every_pass_option_and_pipeline(capsys):
    rc, out, _ = run(capsys, "passes")
    assert rc == 0
    for name, info in PASSES.items():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert info.doc in line
        for opt in info.options:
            assert opt.describe() in out
    for name, pipe in PIPELINES.items():
        pipe = pipe or "(no passes: the model as imported)"
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(pipe)}$", out, re.M)


@pytest.mark.parametrize("argv, says", [
    (["compile", "--passes", "dcee"], "did you mean 'dce'"),
    (["compile", "--passes", "inline{nams=x}"], "did you mean 'names'"),
    (["compile", "--passes", "fold-constants{max_bytes=-4}"], "outside the allowed range"),
    (["compile", "digits-cnm"], "did you mean 'digits-cnn'"),
    (["compile", "missing.onnx"], "no such file"),
    (["compile", "no_such_pkg_xyz:model"], "cannot import module 'no_such_pkg_xyz'"),
    (["compile", "--target", "xpu"], "invalid choice: 'xpu'"),
    (["compile", "--passes", "dce", "--print-ir-after", "dec"], "did you mean 'dce'"),
    (["inspect"], "required: MODEL"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_errors_are_one_line_exit_2(capsys, argv, says):
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert says in err and "error" in err


def test_model_protocol_and_factory(capsys, user_module):
    rc, _, err = run(capsys, "compile", "tsm_user_models:not_a_model")
    assert rc == 2 and "has no .fn" in err
    rc, out, err = run(capsys, "compile", "tsm_user_models:make", "--passes", "dce", "--repeats", "2",
                       "--print-ir-after-all", "-o", str(user_module / "t.tsx"))
    assert rc == 0, err
    import tsm_user_models as um
    model = um.make()
    x, y = model.eval_data
    acc = float(np.mean(np.asarray(um.apply(model.params, x)).argmax(-1) == y))
    assert f"accuracy on 50 held-out samples: source {100 * acc:.2f}%" in out
    assert "// ----- IR after dce (step 1) -----" in out and "graph @tiny(%x: f32[N,6])" in out
    assert (user_module / "t.tsx").is_file()


def test_inspect_prints_ir_and_counts(capsys, user_module):
    rc, out, _ = run(capsys, "inspect", "tsm_user_models:make", "--batch-dim", "none")
    assert rc == 0
    import tsm_user_models as um
    m = um.make()
    g = tensorsmith.trace(m.fn, *m.example_inputs, params=m.params, name="tiny")
    assert g.to_text() in out
    s = graph_stats(g)
    for op, n in s.ops.items():
        assert re.search(rf"^{re.escape(op)}\s+{n}$", out, re.M)
    assert f"{s.nodes} nodes, {s.params} params ({s.param_elems:,} elements" in out
    assert re.search(r"^@w1\s+\(6, 12\)\s+f32\s+288 B\s+0.0%$", out, re.M)


def test_tsir_file_is_a_model(capsys, tmp_path):
    ex = examples.load("digits-cnn")
    g = tensorsmith.trace(ex.fn, *ex.example_inputs, params=ex.params, batch_dim="N")
    path = ir.save(g, tmp_path / "digits.tsir")
    rc, out, err = run(capsys, "compile", str(path), "--passes", "inline,dce", "--repeats", "2",
                       "-o", str(tmp_path / "d.tsx"))
    assert rc == 0, err
    assert "latency" in out and "source IR" in out  # the baseline is the IR, not a JAX function
    m = re.search(r"max \|compiled - source\| on random inputs: (\S+)", out)
    assert m and float(m.group(1)) < 1e-5


def test_bisect_command_with_data_file(capsys, tmp_path):
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    np.savez(tmp_path / "d.npz", x=x[:64], y=y[:64])
    out_json = tmp_path / "b.json"
    rc, out, err = run(capsys, "bisect", "digits-cnn", "--passes", "inline,dce",
                       "--data", str(tmp_path / "d.npz"), "--json", str(out_json))
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert [s["name"] for s in res["steps"]] == ["source", "inline", "dce"]
    acc = float(np.mean(np.asarray(ex.fn(ex.params, x[:64])).argmax(-1) == y[:64]))
    assert res["steps"][0]["accuracy"] == pytest.approx(acc)
    assert res["worst"] is None and "no pass added more than 1e-06 relative L2 error" in out
    np.savez(tmp_path / "bad.npz", z=x[:4])
    rc, _, err = run(capsys, "bisect", "digits-cnn", "--passes", "dce", "--data", str(tmp_path / "bad.npz"))
    assert rc == 2 and "needs x or input_0" in err


def test_onnx_file_is_a_model(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc, out, err = run(capsys, "inspect", str(path), "--no-ir")
    assert rc == 0, err
    assert re.search(r"^@W\s+\(4, 3\)\s+f32\s+48 B", out, re.M)
    rc, out, err = run(capsys, "compile", str(path), "--repeats", "2", "-o", str(tmp_path / "t.tsx"))
    assert rc == 0, err
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = np.asarray(tensorsmith.load(tmp_path / "t.tsx")(x)[0])  # graph models return a list
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-6)


# --- what a new user hits (issue 20) --------------------------------------------------------
@pytest.fixture
def compile_log():
    """Messages of JAX's compile log (jax_log_compiles) while the test runs."""
    import logging

    import jax
    msgs: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            msgs.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    yield msgs
    jax.config.update("jax_log_compiles", False)
    logger.removeHandler(handler)


def test_each_model_compiles_once_and_slow_steps_print_progress(capsys, user_module, compile_log,
                                                                monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 0.0)  # announce every step, however quick
    rc, out, err = run(capsys, "compile", "tsm_user_models:make", "--repeats", "2",
                       "-o", str(user_module / "t.tsx"))
    assert rc == 0, err
    xla = [m for m in compile_log if m.startswith("Finished XLA compilation")]
    # the source function and the compiled model once each, however many calls were timed
    # (fold-constants compiles its own evaluation when anything folds)
    assert sum("jit(wrapped)" in m for m in xla) == 1, xla
    assert sum("jit(apply)" in m for m in xla) == 1, xla
    steps = [ln.split(": ", 1)[1] for ln in err.splitlines() if ln.endswith(" ...")]
    assert steps == ["importing the model ...", "pass canonicalize (1/4) ...", "pass cse (2/4) ...",
                     "pass fold-constants (3/4) ...", "pass dce (4/4) ...",
                     "XLA compile and first call of the source model (jax.jit(fn)) ...",
                     "XLA compile and first call of the compiled model ...",
                     "latency: 2 interleaved runs of each model ...", "exporting ..."]
    assert re.search(r"^tensorsmith: pass dce \(4/4\): \d+\.\d s$", err, re.M)
    assert re.search(r"compiled [\d.]+ ms  \((\d+\.\d\dx (faster|slower)|same speed)\)$", out, re.M)


def test_quick_steps_print_nothing_on_stderr(capsys, user_module, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 60.0)  # every step here is quicker than this
    rc, _, err = run(capsys, "compile", "tsm_user_models:make", "--passes", "dce", "--repeats", "1",
                     "-o", str(user_module / "t.tsx"))
    assert rc == 0 and err == "", err


def test_repeats_0_skips_the_latency_measurement(capsys, user_module, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 0.0)
    rc, out, err = run(capsys, "compile", "tsm_user_models:make", "--repeats", "0",
                       "-o", str(user_module / "t.tsx"))
    assert rc == 0, err
    assert "latency   not measured (--repeats 0)" in out and "interleaved" not in out + err
    assert "accuracy on 50 held-out samples" in out
    rc, _, err = run(capsys, "compile", "--repeats", "-1")
    assert rc == 2 and "'-1' is not a whole number >= 0" in err


def test_print_ir_after_comes_after_the_header(capsys, user_module):
    rc, out, err = run(capsys, "compile", "tsm_user_models:make", "--passes", "canonicalize,dce",
                       "--print-ir-after", "dce", "--repeats", "0", "-o", str(user_module / "t.tsx"))
    assert rc == 0, err
    assert out.index("pipeline  canonicalize,dce") < out.index("// ----- IR after dce (step 2) -----")
    assert out.index("// ----- IR after dce") < out.index("nodes ")
    assert "IR after canonicalize" not in out


def test_speed_words_say_which_way():
    assert cli.speed_words(2.34, 2.0) == "1.17x faster"
    assert cli.speed_words(2.0, 2.5) == "1.25x slower"
    assert cli.speed_words(1.0, 1.001) == "same speed"


def test_flops_print_with_a_space_and_one_unit_style(capsys, user_module):
    rc, out, _ = run(capsys, "inspect", "tsm_user_models:make", "--no-ir")
    assert rc == 0
    assert re.search(r"params \(.*\), (\d+ FLOPs|\d+\.\d [KMGT]FLOPs) \(symbolic", out), out
    assert not re.search(r"\dFLOPs", out)
    assert cli._human(800, "FLOPs") == "800 FLOPs" and cli._human(1234567, "FLOPs") == "1.2 MFLOPs"
    rc, out, _ = run(capsys, "compile", "tsm_user_models:make", "--passes", "dce", "--repeats", "0",
                     "-o", str(user_module / "t.tsx"))
    assert re.search(r"^FLOPs\s+[\d.]+ [KMGT]?FLOPs\s+[\d.]+ [KMGT]?FLOPs\s", out, re.M), out


def test_passes_lists_the_pattern_names_canonicalize_takes(capsys):
    from tensorsmith.passes.canonicalize import PATTERNS
    rc, out, _ = run(capsys, "passes")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if "patterns (names for disable=[...])" in ln)
    assert line.split(": ", 1)[1].split(", ") == [p.name for p in PATTERNS]


def test_data_file_that_does_not_exist(capsys, tmp_path):
    rc, _, err = run(capsys, "bisect", "digits-cnn", "--passes", "dce",
                     "--data", str(tmp_path / "nope.npz"))
    assert rc == 2 and "nope.npz': no such file" in err, err


def test_forgetting_params_hints_at_params():
    def apply(params, x):
        return x @ params["w"]

    with pytest.raises(tensorsmith.ModelImportError, match=r"pass them as params=") as e:
        tensorsmith.compile(apply, np.ones((2, 3), np.float32))
    assert "missing 1 required positional argument" in str(e.value)


def test_train_script_writes_where_told_and_never_into_the_package(tmp_path, monkeypatch):
    from tensorsmith.examples import train_digits_cnn as train
    shipped = train.PACKAGE_DIR / "digits_cnn" / "weights.npz"
    before = shipped.read_bytes()
    with pytest.raises(SystemExit):
        train.parse_args(["--out", str(train.PACKAGE_DIR)])
    monkeypatch.chdir(tmp_path)
    assert train.parse_args([]).out == train.Path(".")  # default: the current folder
    full = train.load_data
    monkeypatch.setattr(train, "load_data", lambda: tuple(a[:128] for a in full()))  # quick
    out = train.main(["--epochs", "1", "--min-accuracy", "0"])
    assert (tmp_path / out / "weights.npz").is_file() and (tmp_path / out / "test.npz").is_file()
    with np.load(tmp_path / out / "weights.npz", allow_pickle=False) as z:
        assert "params/Conv_0/kernel" in z.files
    assert shipped.read_bytes() == before


def test_history_and_remarks_print_as_lines():
    import jax.numpy as jnp
    cm = tensorsmith.compile(lambda x: jnp.maximum(x * 1.0, 0.0), np.ones(3, np.float32),
                             passes="canonicalize,dce")
    rec = cm.history[0]
    assert str(rec.remarks) == "\n".join(f"[canonicalize] {r.kind}: {r.node}: {r.message}"
                                         for r in rec.remarks) and len(rec.remarks) >= 2
    assert str(rec.remarks.of_kind("missed")) == "(no remarks)"
    lines = str(cm.history).splitlines()
    assert [ln.split()[:2] for ln in lines] == [["1", "canonicalize"], ["2", "dce"]]
    assert f"{rec.before.nodes} -> {rec.after.nodes} nodes  {len(rec.remarks)} applied" in lines[0]
    assert str(tensorsmith.compile(lambda x: x * 2, np.ones(3, np.float32), passes="none").history) \
        == "(no passes ran)"


def test_compile_an_onnx_model_with_int64_inputs(capsys, tmp_path):
    """Token ids are int64: the CLI's source run, compiled run and latency must keep them so
    (JAX truncates 64-bit arrays to 32 bits outside x64 mode, and the two then disagree)."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper
    table = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    g = h.make_graph([h.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
                      h.make_node("ReduceSum", ["emb", "axes"], ["out"], keepdims=0)], "ids_model",
                     [h.make_tensor_value_info("ids", T.INT64, ["batch", "sequence"])],
                     [h.make_tensor_value_info("out", T.FLOAT, ["batch", 4])],
                     [numpy_helper.from_array(table, "table"),
                      numpy_helper.from_array(np.array([1], np.int64), "axes")])
    path = tmp_path / "ids.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    rc, out, err = run(capsys, "compile", str(path), "--repeats", "2", "-o", str(tmp_path / "ids.tsx"))
    assert rc == 0, err
    assert "max |compiled - source| on random inputs: 0" in out
    assert re.search(r"latency \(batch \d+, median of 2 interleaved runs", out)
