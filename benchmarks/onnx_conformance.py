"""ONNX node conformance: run every onnx backend node case through tensorsmith.compile.

    python benchmarks/onnx_conformance.py [-j N] [--filter REGEX] [--out FILE] [--timeout S]
                                          [--mode both|once|inputs]

The headline figure is the compile-once path, the way a user runs an onnxruntime session:
``cm = tensorsmith.compile(model)`` on the model alone, then ``cm(*inputs)`` for each data
set. Where the model's shapes depend on input values (Reshape's shape fed as an input...)
the compiled model specializes at call time. Beside it (``--mode both``, the default) the
figure for compiling with the first data set as example inputs.

A case passes when every output of every data set matches: same dtype and shape, values
within the case's rtol/atol (NaN where NaN is expected), exact for integers and booleans.
Sequence/optional outputs count as errors.

JAX runs with 64-bit types enabled here, because ONNX models compute in int64/double.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import time
import traceback
import warnings
from collections import Counter
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).parent / "results" / "onnx_conformance.json"


def load_cases(pattern: str | None = None):
    """The onnx node test cases (name -> TestCase), optionally filtered by a regex."""
    from onnx.backend.test.loader import load_model_tests
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    rx = re.compile(pattern) if pattern else None
    return {c.name: c for c in cases if rx is None or rx.search(c.name)}


class CaseError(Exception):
    """A case cannot be run as a tensor-only model (sequences, optionals)."""


def _array(x, what: str) -> np.ndarray:
    import onnx
    if isinstance(x, onnx.TensorProto):
        return onnx.numpy_helper.to_array(x)
    if isinstance(x, (list, tuple)):
        raise CaseError(f"{what} is a sequence (not supported)")
    if x is None:
        raise CaseError(f"{what} is an optional (not supported)")
    return np.asarray(x)


def _data_sets(case):
    if case.data_sets is not None:
        return case.data_sets
    import glob
    import onnx
    out = []
    for d in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        def read(kind):
            files = sorted(glob.glob(os.path.join(d, f"{kind}_*.pb")),
                           key=lambda p: int(re.findall(r"(\d+)\.pb$", p)[0]))
            return [onnx.load_tensor(f) for f in files]
        out.append((read("input"), read("output")))
    return out


def _model(case):
    if case.model is not None:
        return case.model
    import onnx
    return onnx.load(os.path.join(case.model_dir, "model.onnx"))


def compare(actual, expected, rtol: float, atol: float, index: int) -> str | None:
    """None if ``actual`` matches ``expected``, else what differs."""
    a = np.asarray(actual)
    e = expected
    if a.dtype != e.dtype:
        return f"output {index}: dtype {a.dtype} != expected {e.dtype}"
    if a.shape != e.shape:
        return f"output {index}: shape {a.shape} != expected {e.shape}"
    floating = e.dtype.kind == "f" or e.dtype.name.startswith(("float", "bfloat"))
    if e.dtype.kind in "biuSU" or e.dtype.itemsize == 0:
        bad = a != e
    elif e.dtype.kind == "c":
        bad = ~np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    else:  # includes bfloat16/float8 (ml_dtypes): compare in float64
        af, ef = a.astype(np.float64), e.astype(np.float64)
        if not floating:  # ml_dtypes int4 etc.
            bad = af != ef
        else:
            with np.errstate(invalid="ignore"):
                bad = ~(np.isclose(af, ef, rtol=rtol, atol=atol, equal_nan=True)
                        | ((af == ef) & np.isinf(ef)))
    n = int(np.count_nonzero(bad))
    if n:
        idx = np.argwhere(np.asarray(bad))[0]
        at = tuple(int(i) for i in idx)
        return (f"output {index}: {n}/{e.size} elements differ (first at {at}: got "
                f"{a[at] if a.ndim else a}, expected {e[at] if e.ndim else e})")
    return None


def _computed_at_import(graph) -> bool:
    """Whether every output is an import-time constant (the case never ran compiled code)."""
    consts = set(graph.params) | {n.outputs[0].name for n in graph.nodes if n.op == "constant"}
    return all(v.name in consts for v in graph.outputs)


def run_case(case, mode: str = "once") -> dict:
    """Import, compile and run one case; ``{'status': pass|mismatch|error, ...}``.

    ``mode="once"``: compile the model file alone, as a user creates one session, then call
    it with every data set (the compiled model specializes where shapes depend on inputs).
    ``mode="inputs"``: compile with the first data set's inputs as examples (early
    specialization), then call it with every data set.
    """
    import tensorsmith
    t0 = time.perf_counter()
    info: dict = {"status": "error", "message": ""}
    try:
        model = _model(case)
        data = [([_array(x, f"input {i}") for i, x in enumerate(ins)],
                 [_array(x, f"output {i}") for i, x in enumerate(outs)]) for ins, outs in data_or(case)]
        compiled = None
        for k, (ins, outs) in enumerate(data):
            if compiled is None:
                compiled = tensorsmith.compile(model, *(ins if mode == "inputs" else ()),
                                               target="cpu")
            got = compiled(*ins)
            if len(got) != len(outs):
                info.update(status="mismatch", message=f"{len(got)} outputs, expected {len(outs)}")
                break
            for i, (g, e) in enumerate(zip(got, outs)):
                msg = compare(g, e, case.rtol, case.atol, i)
                if msg:
                    info.update(status="mismatch", message=f"data set {k}: {msg}")
                    break
            if info["status"] == "mismatch":
                break
        else:
            info.update(status="pass")
        if compiled is not None:
            info["symbolic"] = compiled.symbolic
            info["specialized"] = sorted(compiled.specialized)
            info["compiles"] = compiled.cache_info().compiles
            info["folded"] = _computed_at_import(compiled.graph)
    except Exception as e:  # noqa: BLE001 - every failure is a recorded outcome
        info["message"] = f"{type(e).__name__}: {e}"
        if os.environ.get("CONFORMANCE_TRACEBACK"):
            info["traceback"] = traceback.format_exc()
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return info


def run_modes(case, modes: tuple[str, ...]) -> dict:
    """The first mode's outcome, with the others' beside it (``with_inputs``)."""
    res = run_case(case, modes[0])
    if "inputs" in modes[1:]:
        res["with_inputs"] = run_case(case, "inputs")
    return res


def data_or(case):
    return _data_sets(case)


# --- running many cases, each with a time limit --------------------------------------------------
class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _worker(conn, cases, timeout: int, modes=("once",)):
    warnings.simplefilter("ignore")
    import jax
    # No global x64 here: CompiledModel turns it on for 64-bit graphs itself, as users get it.
    signal.signal(signal.SIGALRM, _on_alarm)
    done = 0
    while True:
        name = conn.recv()
        if name is None:
            return
        signal.alarm(timeout)
        try:
            res = run_modes(cases[name], modes)
        except _Timeout:
            res = {"status": "error", "message": f"Timeout: case took more than {timeout} s"}
        finally:
            signal.alarm(0)
        conn.send((name, res))
        done += 1
        if done % 200 == 0:
            jax.clear_caches()


def run_all(cases: dict, jobs: int = 1, timeout: int = 60, progress=None,
            modes: tuple[str, ...] = ("once",)) -> dict:
    """Run every case in ``jobs`` worker processes; a hung worker is killed and replaced."""
    ctx = mp.get_context("fork")
    todo = list(cases)
    results: dict = {}
    workers = {}  # conn -> [process, case name, start time]

    def spawn():
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, cases, timeout, modes), daemon=True)
        p.start()
        workers[parent] = [p, None, 0.0]
        feed(parent)

    def feed(conn):
        if todo:
            name = todo.pop(0)
            workers[conn][1:] = [name, time.time()]
            conn.send(name)
        else:
            workers[conn][1] = None
            conn.send(None)

    for _ in range(max(1, min(jobs, len(todo)))):
        spawn()
    while any(w[1] is not None for w in workers.values()):
        ready = wait([c for c, w in workers.items() if w[1] is not None], timeout=5)
        for conn in ready:
            try:
                name, res = conn.recv()
            except EOFError:  # the worker died (segfault, OOM): record and replace it
                p, name, _ = workers.pop(conn)
                results[name] = {"status": "error", "message": f"Crash: worker exited with {p.exitcode}"}
                spawn()
                continue
            results[name] = res
            if progress:
                progress(len(results), len(cases), name, res)
            feed(conn)
        now = time.time()
        for conn, (p, name, start) in list(workers.items()):
            if name is not None and now - start > timeout + 30:
                p.kill()
                workers.pop(conn)
                results[name] = {"status": "error", "message": f"Timeout: case took more than {timeout} s"}
                spawn()
    for p, _, _ in workers.values():
        p.join(timeout=5)
    return results


def category(res: dict) -> str:
    """A failure's message with names and numbers taken out, for grouping."""
    msg = res.get("message", "")
    m = re.search(r"\(([A-Za-z0-9]+), domain ([\w.]+), opset \d+\): (.*)", msg)
    if m:
        reason = re.sub(r"'[^']*'", "'…'", m.group(3))
        return f"unsupported {m.group(1)}: {reason[:90]}"
    first = msg.splitlines()[0] if msg else ""
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", first)
    return f"{res['status']}: {first[:110]}"


def summarize(results: dict) -> dict:
    counts = Counter(r["status"] for r in results.values())
    total = len(results)
    cats = Counter(category(r) for r in results.values() if r["status"] != "pass")
    return {"total": total, "passed": counts["pass"], "mismatch": counts["mismatch"],
            "error": counts["error"], "pass_rate": round(counts["pass"] / total, 4) if total else 0.0,
            "passed_fully_folded": sum(1 for r in results.values()
                                       if r["status"] == "pass" and r.get("folded")),
            "passed_specialized": sum(1 for r in results.values()
                                      if r["status"] == "pass" and r.get("specialized")),
            "passed_symbolic": sum(1 for r in results.values()
                                   if r["status"] == "pass" and r.get("symbolic")),
            "passed_with_inputs": sum(1 for r in results.values()
                                      if r.get("with_inputs", {}).get("status") == "pass"),
            "categories": dict(cats.most_common())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", help="only cases whose name matches this regex")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per case")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file for every case's outcome")
    ap.add_argument("--top", type=int, default=25, help="failure categories to print")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each failing case")
    ap.add_argument("--mode", choices=["both", "once", "inputs"], default="both",
                    help="once: compile the model file alone, then call it with each data set "
                         "(the headline); inputs: compile with the first data set as example "
                         "inputs; both (default): once, with the inputs figure beside it")
    ap.add_argument("--write-passing", metavar="FILE",
                    help="also write the names of the passing cases, one a line (the list "
                         "tests/onnx/test_onnx_conformance.py guards)")
    args = ap.parse_args(argv)
    cases = load_cases(args.filter)
    if not cases:
        print(f"no case matches {args.filter!r}", file=sys.stderr)
        return 2
    t0 = time.time()

    def progress(done, total, name, res):
        if args.verbose and res["status"] != "pass":
            print(f"  {res['status']:8s} {name}: {res['message'].splitlines()[0][:200]}")
        elif done % 100 == 0:
            print(f"  {done}/{total} cases ({time.time() - t0:.0f} s)", flush=True)

    modes = {"both": ("once", "inputs"), "once": ("once",), "inputs": ("inputs",)}[args.mode]
    results = run_all(cases, args.jobs, args.timeout, progress, modes)
    summary = summarize(results)
    summary["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "cases": dict(sorted(results.items()))}, indent=1))
    if args.write_passing:
        Path(args.write_passing).write_text(
            "".join(f"{n}\n" for n, r in sorted(results.items()) if r["status"] == "pass"))
    how = {"once": "compiled once, then called with each data set",
           "inputs": "compiled with example inputs"}[modes[0]]
    print(f"ONNX node conformance ({how}): {summary['passed']}/{summary['total']} passed "
          f"({100 * summary['pass_rate']:.1f}%), {summary['mismatch']} mismatched, "
          f"{summary['error']} errors in {summary['seconds']} s -> {out}")
    if len(modes) > 1:
        print(f"  compiled with example inputs: {summary['passed_with_inputs']}/{summary['total']} passed")
    print(f"  (of the passes, {summary['passed_symbolic']} ran one symbolic graph, "
          f"{summary['passed_specialized']} were specialized to input values, "
          f"{summary['passed_fully_folded']} computed entirely at import by folding)")
    for cat, n in list(summary["categories"].items())[:args.top]:
        print(f"  {n:5d}  {cat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
