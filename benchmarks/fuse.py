"""Pipelines against onnxruntime on the onnx package's nine CNNs (issue 16's measurement).

Models: ``onnx/backend/test/data/light/light_*.onnx`` with weights randomized with a fixed
seed (``randomized``: He-scaled weights, valid BN statistics, logits out) and the batch dim
opened, at batch 1 and 8; plus the BERT encoder layer and the MLP of
``tests/onnx/models.py`` at the batch ``onnx_vs_ort.py`` uses. Sides: onnxruntime
(CPUExecutionProvider, ``intra_op_num_threads=--threads``, graph optimizations on) and
tensorsmith with each ``--passes`` pipeline (repeatable), every side compiled for the batch
with example inputs (so ``xla-options{ynn=auto}`` measures at that batch). Outputs are checked
against onnxruntime first (max |diff| / max |onnxruntime|); then the sides are timed in
interleaved rounds whose order rotates, numpy in and numpy out on every side. Reported per
model and batch: median ms per call of each side, the median over rounds of the per-round
ratio side / onnxruntime (< 1: faster), and per pipeline and batch the geometric mean of the
ratios over the nine CNNs. For the BERT layer and the MLP (tens of microseconds a call) also
the median of individually timed calls and its ratio (``per_call``), which a busy host's
preemptions do not shift.

Threads: this process pins itself to ``--threads`` CPUs before jax starts (XLA sizes its pool
from the affinity mask; see ``onnx_vs_ort.py``), which bounds XLA and onnxruntime alike.

  python benchmarks/fuse.py [--passes default] [--passes "fold-batchnorm,default,xla-options"]
                            [--models resnet50,vgg19] [--batches 1,8] [--threads 2]
                            [--rounds 9] [--quick] [--out benchmarks/results/fuse.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "fuse.json"
CNNS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
        "squeezenet", "vgg19", "zfnet512")
EXTRAS = {"bert_encoder_layer": 8, "mlp_dynamic": 256}  # the batch onnx_vs_ort.py uses
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MAX_REL_ERR = 1e-3  # max |tensorsmith - onnxruntime| / max |onnxruntime|; f32, deep nets


def pin(threads: int) -> list[int]:
    """Restrict this process to ``threads`` CPUs (before jax is imported); the CPUs kept."""
    allowed = sorted(os.sched_getaffinity(0))
    if threads > len(allowed):
        raise SystemExit(f"--threads {threads}: this process may only run on {len(allowed)} CPUs")
    if "jax" in sys.modules:
        raise SystemExit("pin the threads before jax is imported")
    os.sched_setaffinity(0, allowed[:threads])
    return allowed[:threads]


def with_open_batch(model):
    """The model with the first dim of each graph input and output made symbolic ('N'), and
    Reshape targets that pin the shipped batch of 1 (AlexNet's ``[1, 9216]``) copying the
    input's batch instead (0)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in [*m.graph.input, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    targets = {n.input[1] for n in m.graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    inits = {t.name: t for t in m.graph.initializer}
    for name in targets:
        if name in inits:
            shape = numpy_helper.to_array(inits[name])
            if shape.ndim == 1 and shape.size and shape[0] == 1:
                inits[name].CopyFrom(numpy_helper.from_array(
                    np.concatenate([[0], shape[1:]]).astype(shape.dtype), name))
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] in targets:
            for a in n.attribute:
                if a.name == "value":
                    shape = numpy_helper.to_array(a.t)
                    if shape.ndim == 1 and shape.size and shape[0] == 1:
                        a.t.CopyFrom(numpy_helper.from_array(
                            np.concatenate([[0], shape[1:]]).astype(shape.dtype), a.t.name))
    return m


def randomized(name: str, seed: int = 0):
    """light_<name>.onnx with every weight drawn afresh (fixed seed), up to its logits.

    Five of the nine ship their weights as ``ConstantOfShape(shape) = 0.02`` nodes, the others
    as initializers; both become random initializers: He-scaled (sqrt(2 / fan-in)) weights so
    activations stay O(1) through ReLU stacks, N(0, 0.1) biases, batch-norm scales and
    variances in [0.5, 1.5].
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnx_weights import redraw_initializers
    m = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    nodes, made = [], []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            shape = numpy_helper.to_array(inits[n.input[0]])
            made.append(numpy_helper.from_array(np.zeros(shape, np.float32), n.output[0]))
        else:
            nodes.append(n)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in m.graph.initializer if t.name in used]
    gone = {t.name for t in m.graph.initializer if t.name not in used} | {t.name for t in made}
    del m.graph.node[:], m.graph.initializer[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(kept + made)
    # old IR versions list initializers among the graph inputs too
    graph_inputs = [vi for vi in m.graph.input if vi.name not in gone]
    del m.graph.input[:]
    m.graph.input.extend(graph_inputs)
    redraw_initializers(m, np.random.default_rng(seed), lambda fan_in: np.sqrt(2.0 / max(1, fan_in)))
    last = m.graph.node[-1]
    if last.op_type == "Softmax":  # compare logits: random weights give a flat softmax
        m.graph.output[0].name = last.input[0]
        m.graph.node.remove(last)
    return m


def cnn(name: str):
    """(model, inputs(batch) -> feeds) for light_<name>.onnx, randomized, batch opened."""
    import numpy as np
    m = with_open_batch(randomized(name))
    init = {i.name for i in m.graph.initializer}
    specs = [(vi.name, [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim])
             for vi in m.graph.input if vi.name not in init]

    def feeds(batch: int) -> dict:
        rng = np.random.default_rng(1)
        return {n: rng.standard_normal([batch, *s[1:]]).astype(np.float32) for n, s in specs}
    return m, feeds


def extra(name: str):
    sys.path.insert(0, str(ROOT / "tests" / "onnx"))
    import models
    build, inputs = models.MODELS[name]
    return build(), (lambda batch: inputs(batch, seed=1))


def build_sides(model, feeds: dict, pipelines: list[str], threads: int):
    """label -> zero-arg runner (numpy in, list of numpy out); build seconds; remarks."""
    import numpy as np
    import onnxruntime as ort

    import tensorsmith
    sides, build, notes = {}, {}, {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    build["onnxruntime"] = time.perf_counter() - t0
    sides["onnxruntime"] = lambda: sess.run(None, feeds)
    for p in pipelines:
        t0 = time.perf_counter()
        cm = tensorsmith.compile(model, *feeds.values(), passes=p)
        args = list(feeds.values())
        [np.asarray(o) for o in cm(*args)]
        build[p] = time.perf_counter() - t0
        sides[p] = (lambda cm=cm, args=args: [np.asarray(o) for o in cm(*args)])
        notes[p] = {"compiler_options": cm.compiler_options,
                    "remarks": [str(r) for rec in cm.history for r in rec.remarks
                                if rec.name == "xla-options"],
                    "nodes": len(cm.graph.nodes)}
    return sides, build, notes


def rel_errors(sides: dict) -> dict:
    """label -> max |side - onnxruntime| / max |onnxruntime| over the outputs."""
    import numpy as np
    want = [np.asarray(w, np.float64) for w in sides["onnxruntime"]()]
    out = {}
    for label, run in sides.items():
        if label == "onnxruntime":
            continue
        got = run()
        out[label] = max(float(np.max(np.abs(np.asarray(g, np.float64) - w)) /
                               max(float(np.max(np.abs(w))), 1e-30)) for g, w in zip(got, want))
    return out


def time_calls(sides: dict, rounds: int, round_s: float) -> dict:
    """Per-call latency: every call timed on its own, in interleaved rounds that rotate their
    order; per side the p10 and median us, and the median's ratio to onnxruntime's.

    For the models of tens of microseconds: on a busy host a preempted call is one outlier
    here, where it shifts a whole round's mean in ``time_sides``."""
    import numpy as np
    calls = {}
    for label, run in sides.items():  # size a round to ~round_s for each side
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < round_s / 2 or n < 3:
            run()
            n += 1
        calls[label] = max(1, int(round_s / ((time.perf_counter() - t0) / n)))
    times = {k: [] for k in sides}
    order, clock = list(sides), time.perf_counter
    for r in range(rounds):
        k0 = r % len(order)
        for label in order[k0:] + order[:k0]:
            run, ts = sides[label], times[label]
            for _ in range(calls[label]):
                t0 = clock()
                run()
                ts.append(clock() - t0)
    base = float(np.median(times["onnxruntime"]))
    return {label: {"p10_us": float(np.percentile(ts, 10)) * 1e6,
                    "median_us": float(np.median(ts)) * 1e6,
                    "median_ratio_vs_ort": float(np.median(ts)) / base}
            for label, ts in times.items()}


def geomean(xs) -> float | None:
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", action="append", default=None, metavar="PIPELINE",
                    help="a tensorsmith pipeline to compare (repeatable; default: default)")
    ap.add_argument("--models", default=None,
                    help="comma-separated; default: the nine CNNs and " + ", ".join(EXTRAS))
    ap.add_argument("--batches", default="1,8", help="CNN batch sizes (default 1,8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (9; quick 3)")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (smoke run)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    pipelines = args.passes or ["default"]
    names = args.models.split(",") if args.models else [*CNNS, *EXTRAS]
    for n in names:
        if n not in CNNS and n not in EXTRAS:
            import difflib
            close = difflib.get_close_matches(n, [*CNNS, *EXTRAS], n=1)
            ap.error(f"unknown model {n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    batches = [int(b) for b in args.batches.split(",")]
    cpus = pin(args.threads)
    rounds = args.rounds or (3 if args.quick else 9)
    round_s, warmup_s = (0.1, 0.2) if args.quick else (0.3, 0.5)

    import jax  # only now: XLA sizes its thread pool from the mask set above
    import onnxruntime as ort

    import tensorsmith  # noqa: F401  (checks the pipelines before any model is built)
    from tensorsmith.passes import parse_pipeline
    from tensorsmith.codegen.executor import setup_cpu_dispatch
    from tensorsmith.ir.serialize import atomic_write
    for p in pipelines:
        parse_pipeline(p)
    sys.path.insert(0, str(HERE))
    from onnx_vs_ort import time_sides

    load_before = os.getloadavg()
    rows = []
    for name in names:
        model, make = cnn(name) if name in CNNS else extra(name)
        for batch in (batches if name in CNNS else [EXTRAS[name]]):
            row = {"model": name, "batch": batch, "kind": "cnn" if name in CNNS else "extra"}
            try:
                feeds = make(batch)
                sides, build, notes = build_sides(model, feeds, pipelines, args.threads)
                row.update(build_s=build, tensorsmith=notes, max_rel_err_vs_ort=rel_errors(sides))
                row["outputs_match"] = {p: e <= MAX_REL_ERR for p, e in row["max_rel_err_vs_ort"].items()}
                row["timing"] = time_sides(sides, rounds, round_s, warmup_s)
                if row["kind"] == "extra":
                    row["per_call"] = time_calls(sides, rounds, round_s)
            except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the run's end
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                row["traceback"] = traceback.format_exc(limit=4)
            rows.append(row)
            _print_row(row, pipelines)

    summary = {}
    for p in pipelines:
        for b in batches:
            ratios = [r["timing"][p]["ratio_vs_ort"] for r in rows
                      if r["kind"] == "cnn" and r["batch"] == b and "timing" in r]
            summary[f"{p} @ batch {b}"] = {"geomean_ratio_vs_ort": geomean(ratios),
                                           "models": len(ratios),
                                           "max_ratio": max(ratios, default=None)}
    report = {"benchmark": "fuse", "baseline": "onnxruntime CPUExecutionProvider, "
              f"intra_op_num_threads={args.threads}, ORT_ENABLE_ALL",
              "pipelines": pipelines, "batches": batches, "rounds": rounds, "quick": args.quick,
              "threads": args.threads, "cpus": cpus, "max_rel_err_allowed": MAX_REL_ERR,
              "host": {"machine": platform.machine(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "jax": jax.__version__, "onnxruntime": ort.__version__,
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                       "cpu_dispatch": list(setup_cpu_dispatch())},
              "geomean": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, (json.dumps(report, indent=2, default=str) + "\n").encode())
    print()
    for k, v in summary.items():
        g = v["geomean_ratio_vs_ort"]
        print(f"geomean ratio vs onnxruntime, {k}: "
              f"{'n/a' if g is None else f'{g:.2f}'} over {v['models']} CNNs"
              + (f" (max {v['max_ratio']:.2f})" if v["max_ratio"] else ""))
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
          f"(on {os.cpu_count()} CPUs); wrote {args.out}")
    return 0


def _print_row(row: dict, pipelines: list[str]) -> None:
    head = f"{row['model']:<20} b{row['batch']:<4}"
    if "error" in row:
        print(f"{head} FAILED: {row['error']}", flush=True)
        return
    t = row["timing"]
    cells = [f"ORT {t['onnxruntime']['median_us'] / 1e3:8.2f} ms"]
    for i, p in enumerate(pipelines):
        ok = "" if row["outputs_match"][p] else " MISMATCH"
        opts = row["tensorsmith"][p]["compiler_options"]
        cells.append(f"[{i}] {t[p]['median_us'] / 1e3:8.2f} ms {t[p]['ratio_vs_ort']:5.2f}x"
                     f"{' ' + ','.join(f'{k[-14:]}={v!r}' for k, v in opts.items()) if opts else ''}{ok}")
    others = t.get("other_processes_cores")
    print(f"{head} {'  '.join(cells)}  (others {others if others is None else round(others, 1)} cores)",
          flush=True)
    if "per_call" in row:
        pc = row["per_call"]
        cells = [f"ORT {pc['onnxruntime']['median_us']:8.1f} us"] + [
            f"[{i}] {pc[p]['median_us']:8.1f} us {pc[p]['median_ratio_vs_ort']:5.2f}x"
            for i, p in enumerate(pipelines)]
        print(f"{'':<26} per call (median of single calls): {'  '.join(cells)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
