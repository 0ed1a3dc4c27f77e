"""Fuzzing the ONNX import with truncated and byte-flipped files (issue 15).

Two small models built here: a CNN (also saved with external data) and a model with an If,
a local function, a sparse Constant and a Resize.

Every mutated file must either compile and run, or be refused with a ``TensorsmithError``:
no other exception, no crash, no hang. And every file onnxruntime refuses on load (a schema
or graph reason; a missing kernel does not count) must be refused by tensorsmith too.

The cases run in a worker subprocess, so a crash or a hang is seen and named, not fatal to
the test run. Run this file with ``--worker`` to see one case list by hand.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

CASE_TIMEOUT_S = 120  # one compile and call on a loaded 2-core machine is a few seconds
_MARK = "@@fuzz "      # the worker's result lines


def small_cnn() -> onnx.ModelProto:
    """Conv, pooling, a Shape->Gather->Concat->Reshape flatten, Gemm, Softmax, a Constant."""
    rng = np.random.default_rng(0)

    def f32(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    inits = [numpy_helper.from_array(f32(3, 2, 3, 3), "conv_w"),
             numpy_helper.from_array(f32(3), "conv_b"),
             numpy_helper.from_array(f32(27, 4), "fc_w"), numpy_helper.from_array(f32(4), "fc_b"),
             numpy_helper.from_array(np.array([0], np.int64), "zero")]
    nodes = [
        h.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Shape", ["p"], ["s"], name="shape"),
        h.make_node("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
        h.make_node("Constant", [], ["minus1"], name="m1",
                    value=numpy_helper.from_array(np.array([-1], np.int64))),
        h.make_node("Concat", ["n", "minus1"], ["flat_shape"], name="cat", axis=0),
        h.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc"),
        h.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    g = h.make_graph(nodes, "small_cnn", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 6, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def branchy() -> onnx.ModelProto:
    """If with sub-graphs reading outer values, a local function with an attribute
    reference, a sparse Constant, Resize by scales, Slice, Casts."""
    vi = h.make_tensor_value_info
    x_type = [1, 2, 4, 4]
    then = h.make_graph([h.make_node("Mul", ["x", "k"], ["t_out"], name="then_mul")], "then",
                        [], [vi("t_out", T.FLOAT, x_type)])
    other = h.make_graph([h.make_node("Neg", ["x"], ["e_out"], name="else_neg")], "else", [],
                         [vi("e_out", T.FLOAT, x_type)])
    leaky = h.make_node("LeakyRelu", ["X"], ["Y"])
    leaky.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="slope",
                                               type=onnx.AttributeProto.FLOAT))
    fn = h.make_function("custom.ops", "MyLeaky", ["X"], ["Y"], [leaky],
                         opset_imports=[h.make_opsetid("", 17)], attributes=["slope"])
    sparse = h.make_sparse_tensor(numpy_helper.from_array(np.array([2, 3], np.float32), "spv"),
                                  numpy_helper.from_array(np.array([1, 5], np.int64), "spi"), [8])
    inits = [numpy_helper.from_array(np.array([0.25], np.float32), "k"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([8], np.int64), "en"),
             numpy_helper.from_array(np.array([3], np.int64), "ax")]
    nodes = [
        h.make_node("Constant", [], ["k0"], name="k0c", value_float=0.0),
        h.make_node("ReduceSum", ["x"], ["tot"], name="sum", keepdims=0),
        h.make_node("Greater", ["tot", "k0"], ["cond"], name="gt"),
        h.make_node("If", ["cond"], ["b"], name="branch", then_branch=then, else_branch=other),
        h.make_node("MyLeaky", ["b"], ["l"], name="act", domain="custom.ops", slope=0.1),
        h.make_node("Resize", ["l", "", "scales"], ["big"], name="up", mode="linear"),
        h.make_node("Slice", ["big", "st", "en", "ax"], ["sl"], name="slice"),
        h.make_node("Constant", [], ["spc"], name="sparse", sparse_value=sparse),
        h.make_node("Add", ["sl", "spc"], ["s2"], name="addsp"),
        h.make_node("Cast", ["s2"], ["d"], name="cast", to=T.DOUBLE),
        h.make_node("Cast", ["d"], ["y"], name="cast2", to=T.FLOAT),
    ]
    g = h.make_graph(nodes, "branchy", [vi("x", T.FLOAT, x_type)], [vi("y", T.FLOAT, [1, 2, 8, 8])],
                     inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("custom.ops", 1)],
                     ir_version=8, functions=[fn])
    onnx.checker.check_model(m, full_check=True)
    return m


MODELS = {"cnn": small_cnn, "branchy": branchy}


def write_cases(root: Path, n: int, seed: int, external: bool, name: str = "cnn") -> list[Path]:
    """``n`` mutated copies of the model (one folder each, with its weights file if external)."""
    base = root / "base"
    base.mkdir(parents=True)
    if external:
        onnx.save_model(MODELS[name](), base / "model.onnx", save_as_external_data=True,
                        all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        weights = (base / "weights.bin").read_bytes()
    else:
        onnx.save_model(MODELS[name](), base / "model.onnx")
    data = (base / "model.onnx").read_bytes()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        b, w = bytearray(data), bytearray(weights) if external else None
        kind = int(rng.integers(6 if external else 4))
        if kind == 0:
            b = b[:int(rng.integers(len(b)))]
        elif kind == 4:  # the weights file, not the model, is cut short
            w = w[:int(rng.integers(len(w)))]
        elif kind == 5:  # or has a byte changed (a valid model with other weights)
            w[int(rng.integers(len(w)))] ^= int(rng.integers(1, 256))
        else:
            for _ in range(1 if kind < 3 else 3):
                b[int(rng.integers(len(b)))] ^= int(rng.integers(1, 256))
        d = root / f"case{i:04d}"
        d.mkdir()
        (d / "model.onnx").write_bytes(bytes(b))
        if external:
            (d / "weights.bin").write_bytes(bytes(w))
        paths.append(d / "model.onnx")
    return paths


# --- the worker: runs in a subprocess ---------------------------------------------------------
def _ort_verdict(path: str) -> tuple[str, str]:
    import onnxruntime as ort
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (any load failure is a refusal, whatever its type)
        text = f"{type(e).__name__}: {e}"
        # a missing kernel, or a kernel that refuses its attributes when it is built (Resize
        # on some axes), is a limit of onnxruntime's implementation, not of the model
        kernel = "NOT_IMPLEMENTED" in text or "Exception during initialization" in text
        return ("kernel" if kernel else "refused"), text[:300]
    return "ok", ""


def _ts_verdict(path: str) -> tuple[str, str]:
    import traceback

    import tensorsmith
    from tensorsmith.ir import numpy_dtype
    try:
        cm = tensorsmith.compile(path)
        shapes = [tuple(d if isinstance(d, int) else 1 for d in v.type.shape)
                  for v in cm.graph.inputs]
        if sum(int(np.prod(s)) for s in shapes) > 10_000_000:
            return "ok", "compiled; inputs too big to call"
        rng = np.random.default_rng(0)
        args = [rng.standard_normal(s).astype(numpy_dtype(v.dtype))
                for s, v in zip(shapes, cm.graph.inputs)]
        cm(*args)
    except tensorsmith.TensorsmithError as e:
        return "refused", f"{type(e).__name__}: {e}"[:300]
    except Exception:  # noqa: BLE001  (exactly what this test exists to catch)
        return "raw", traceback.format_exc()[-1500:]
    return "ok", ""


def _worker(paths: list[str]) -> None:
    import onnxruntime as ort
    ort.set_default_logger_severity(4)
    for p in paths:
        ts, ts_detail = _ts_verdict(p)
        print(_MARK + json.dumps({"path": p, "phase": "tensorsmith"}), flush=True)
        ort_v, ort_detail = _ort_verdict(p)
        print(_MARK + json.dumps({"path": p, "ts": ts, "ts_detail": ts_detail, "ort": ort_v,
                          "ort_detail": ort_detail}), flush=True)


# --- the harness ------------------------------------------------------------------------------
def run_cases(paths: list[Path], outcomes: Counter | None = None) -> list[str]:
    """Problems found: raw exceptions, crashes, hangs, files onnxruntime refuses and we run.

    ``outcomes`` counts ``(tensorsmith, onnxruntime)`` verdict pairs."""
    outcomes = Counter() if outcomes is None else outcomes
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, __file__, "--worker", *map(str, paths)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def read():  # a thread, so that a silent worker is a timeout, not a blocked test
        for ln in proc.stdout:
            if ln.startswith(_MARK):  # onnxruntime prints to stdout too
                lines.put(ln[len(_MARK):])
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    problems = []
    try:
        for p in paths:
            for step in ("tensorsmith", "onnxruntime"):
                try:
                    line = lines.get(timeout=CASE_TIMEOUT_S * (1 if step == "tensorsmith" else 0.5))
                except queue.Empty:
                    return problems + [f"{p}: {step} hung (> {CASE_TIMEOUT_S} s)"]
                if line is None:
                    return problems + [f"{p}: the process crashed in {step} "
                                       f"(exit {proc.wait()})"]
            r = json.loads(line)
            outcomes[r["ts"], r["ort"]] += 1
            if r["ts"] == "raw":
                problems.append(f"{p}: raw exception\n{r['ts_detail']}")
            elif r["ort"] == "refused" and r["ts"] == "ok":
                problems.append(f"{p}: onnxruntime refuses it ({r['ort_detail']}) but "
                                "tensorsmith compiled and ran it")
    finally:
        proc.kill()
        proc.wait()
    return problems


QUICK = {  # (model, external data): cases in the default run (about 20 s on 2 idle cores)
    ("cnn", False): 50, ("cnn", True): 30, ("branchy", False): 40}


@pytest.mark.parametrize("name,external", sorted(QUICK), ids=lambda v: str(v))
def test_mutated_onnx_files_compile_or_are_refused(tmp_path, name, external):
    paths = write_cases(tmp_path, QUICK[name, external], seed=15 + external, external=external,
                        name=name)
    outcomes = Counter()
    problems = run_cases(paths, outcomes)
    assert not problems, "\n\n".join(problems[:5])
    # the seed gives files of both kinds: some run, some are refused
    assert outcomes["ok", "ok"] and outcomes["refused", "refused"], outcomes


@pytest.mark.slow
@pytest.mark.parametrize("name,external", sorted(QUICK), ids=lambda v: str(v))
def test_mutated_onnx_files_long_run(tmp_path, name, external):
    paths = write_cases(tmp_path, 600, seed=1500 + external, external=external, name=name)
    problems = run_cases(paths)
    assert not problems, f"{len(problems)} problems:\n\n" + "\n\n".join(problems[:10])


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2:])
