"""Latency of whole ONNX models compiled by tensorsmith (XLA CPU) against onnxruntime's CPU provider.

Models come from ``tests/onnx/models.py`` (ResNet-style CNN at batch 8, BERT encoder layer at
batch 8, MLP at batch 256), each imported with its symbolic batch. Three sides run in one
process: tensorsmith with no passes, tensorsmith with ``passes="default"``, and an
onnxruntime ``InferenceSession`` (CPUExecutionProvider, its default graph optimizations).
Every side takes numpy inputs and returns numpy outputs, as a user calls them. Outputs are
checked equal (rtol=atol=1e-4) before any timing; then each side is warmed up and timed in
interleaved rounds (the order rotates every round); reported: median per-call latency of each
side, and the median over rounds of the per-round ratio tensorsmith / onnxruntime (< 1: faster).

Threads. Both runtimes get the same number of cores, ``--threads`` (default: every CPU this
process may run on):
- onnxruntime: ``intra_op_num_threads = inter_op_num_threads = threads`` (inter-op only
  matters in ORT's parallel execution mode; the default sequential mode is kept).
- XLA CPU sizes its intra-op thread pool from the process CPU affinity mask when the client
  starts; no XLA flag sets that size (measured with jaxlib 0.10.2: ``--xla_cpu_multi_thread_eigen
  =false`` still runs a matmul on every core, ``intra_op_parallelism_threads`` is not an XLA
  flag). So before jax is imported this script pins itself to ``threads`` CPUs with
  ``os.sched_setaffinity`` (re-executing itself if jax was already imported), which bounds
  XLA and ORT alike. The JSON records each side's CPU-time/wall-time during timing, which
  shows how many cores it really used (ORT's pool spin-waits, so busy is not always useful),
  and ``other_processes_cores``: the cores other processes kept busy meanwhile. Above 0.2
  the script warns: on a shared host multi-threaded numbers are then skewed (ORT's spinning
  pool most), so rerun when the host is quiet.

  python benchmarks/onnx_vs_ort.py [--quick] [--threads N] [--rounds R] [--models a,b]
                                   [--out benchmarks/results/onnx_vs_ort.json]

``--threads 1`` writes ``onnx_vs_ort_threads1.json`` unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "onnx_vs_ort.json"
BATCH = {"resnet_cnn": 8, "bert_encoder_layer": 8, "mlp_dynamic": 256}
RTOL = ATOL = 1e-4
_PINNED_ENV = "TENSORSMITH_BENCH_PINNED"


def pin_threads(threads: int, argv: list[str]) -> list[int]:
    """Restrict this process to ``threads`` CPUs before XLA starts; returns the CPUs kept."""
    allowed = sorted(os.sched_getaffinity(0))
    if threads > len(allowed):
        raise SystemExit(f"--threads {threads}: this process may only run on {len(allowed)} CPUs")
    cpus = allowed[:threads]
    if cpus != allowed:
        os.sched_setaffinity(0, cpus)
        # XLA reads the mask once, when its CPU client starts: too late if jax is already up
        if "jax" in sys.modules and not os.environ.get(_PINNED_ENV):
            os.environ[_PINNED_ENV] = "1"
            os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])
    return cpus


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _host_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _sides(model, feeds: dict, threads: int) -> tuple[dict, dict]:
    """name -> zero-arg callable returning a list of numpy outputs; and build seconds per side."""
    import numpy as np
    import onnxruntime as ort

    import tensorsmith

    build, sides = {}, {}
    for label, passes in (("tensorsmith", []), ("tensorsmith_default", "default")):
        t0 = time.perf_counter()
        cm = tensorsmith.compile(model, target="cpu", passes=passes)
        args = [feeds[v.name] for v in cm.graph.inputs]
        [np.asarray(o) for o in cm(*args)]  # first call: XLA compiles for this batch
        build[label] = time.perf_counter() - t0
        sides[label] = (lambda cm=cm, args=args: [np.asarray(o) for o in cm(*args)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    build["onnxruntime"] = time.perf_counter() - t0
    sides["onnxruntime"] = lambda: sess.run(None, feeds)
    return sides, build


def check_equal(sides: dict) -> float:
    """Max abs difference of each tensorsmith side from onnxruntime; raises when not allclose."""
    import numpy as np
    want = sides["onnxruntime"]()
    worst = 0.0
    for label, run in sides.items():
        for i, (g, w) in enumerate(zip(run(), want)):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{label} output {i} differs from onnxruntime")
            worst = max(worst, float(np.max(np.abs(g - w))))
    return worst


def time_sides(sides: dict, rounds: int, round_s: float, warmup_s: float) -> dict:
    """Interleaved timing; per side median/p25/p75 us per call and cores used (cpu/wall)."""
    import numpy as np
    calls = {}
    for label, run in sides.items():  # warm up, and size a round to ~round_s for each side
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < warmup_s or n < 3:
            run()
            n += 1
        calls[label] = max(1, int(round_s / ((time.perf_counter() - t0) / n)))
    per_call = {k: [] for k in sides}
    cpu = {k: 0.0 for k in sides}
    wall = {k: 0.0 for k in sides}
    order = list(sides)
    # what other processes ran meanwhile: on a shared host they steal cores from the pools
    busy0, own0, wall0 = _host_busy_seconds(), _cpu_seconds(), time.perf_counter()
    for r in range(rounds):
        k0 = r % len(order)
        for label in order[k0:] + order[:k0]:
            run, n = sides[label], calls[label]
            c0, t0 = _cpu_seconds(), time.perf_counter()
            for _ in range(n):
                run()
            dt = time.perf_counter() - t0
            cpu[label] += _cpu_seconds() - c0
            wall[label] += dt
            per_call[label].append(dt / n)
    busy1 = _host_busy_seconds()
    others = (None if busy0 is None else
              max(0.0, (busy1 - busy0) - (_cpu_seconds() - own0)) / (time.perf_counter() - wall0))
    out = {"other_processes_cores": others}
    base = per_call["onnxruntime"]
    for label, ts in per_call.items():
        ratios = [a / b for a, b in zip(ts, base)]
        out[label] = {"median_us": statistics.median(ts) * 1e6,
                      "p25_us": float(np.percentile(ts, 25)) * 1e6,
                      "p75_us": float(np.percentile(ts, 75)) * 1e6,
                      "calls_per_round": calls[label],
                      "cores_used": cpu[label] / wall[label]}
        if label != "onnxruntime":
            out[label].update(ratio_vs_ort=statistics.median(ratios),
                              ratio_p25=float(np.percentile(ratios, 25)),
                              ratio_p75=float(np.percentile(ratios, 75)))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (smoke run)")
    all_threads = len(os.sched_getaffinity(0))
    ap.add_argument("--threads", type=int, default=all_threads,
                    help="cores for both runtimes (default: all this process may use)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (15; quick 5)")
    ap.add_argument("--models", default=",".join(BATCH), help="comma-separated: " + ", ".join(BATCH))
    ap.add_argument("--out", default=None, help=f"JSON path (default {DEFAULT_OUT.name}; with "
                    "fewer threads than the host's CPUs, onnx_vs_ort_threads<N>.json beside it)")
    args = ap.parse_args(argv)
    names = args.models.split(",")
    for name in names:
        if name not in BATCH:
            import difflib
            close = difflib.get_close_matches(name, BATCH, n=1)
            ap.error(f"unknown model {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f"; choose from {', '.join(BATCH)}")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    out = Path(args.out) if args.out else (
        DEFAULT_OUT if args.threads == os.cpu_count()
        else DEFAULT_OUT.with_name(f"onnx_vs_ort_threads{args.threads}.json"))
    cpus = pin_threads(args.threads, argv)
    rounds = args.rounds or (5 if args.quick else 15)
    round_s, warmup_s = (0.05, 0.2) if args.quick else (0.15, 0.5)

    # only now: jax must start after the affinity mask is set
    import jax
    import onnx
    import onnxruntime as ort

    from tensorsmith.ir.serialize import atomic_write
    sys.path.insert(0, str(ROOT / "tests" / "onnx"))
    import models

    load_before = os.getloadavg()  # other processes on these cores skew multi-thread timings
    results = {}
    for name in names:
        build_model, make_inputs = models.MODELS[name]
        model, feeds = build_model(), make_inputs(BATCH[name], seed=1)
        sides, build = _sides(model, feeds, args.threads)
        max_diff = check_equal(sides)
        timing = time_sides(sides, rounds, round_s, warmup_s)
        results[name] = {"batch": BATCH[name], "opset": model.opset_import[0].version,
                         "onnx_nodes": len(model.graph.node),
                         "inputs": {k: list(v.shape) for k, v in feeds.items()},
                         "max_abs_diff_vs_ort": max_diff, "build_s": build, **timing}

    report = {
        "benchmark": "onnx_vs_ort", "baseline": "onnxruntime CPUExecutionProvider",
        "quick": args.quick, "rounds": rounds, "threads": args.threads, "cpus": cpus,
        "threading": {"onnxruntime": f"intra_op_num_threads=inter_op_num_threads={args.threads}",
                      "xla": f"process CPU affinity pinned to {len(cpus)} CPU(s) before jax import"},
        "io": "numpy inputs -> numpy outputs on every side",
        "host": {"machine": platform.machine(), "processor": platform.processor(),
                 "cpu_count": os.cpu_count(), "python": platform.python_version(),
                 "jax": jax.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "models": results,
    }
    atomic_write(out, (json.dumps(report, indent=2) + "\n").encode())

    head = (f"{'model':<20} {'batch':>5} {'ORT us':>9} {'ts us':>9} {'ts/ORT':>7} "
            f"{'ts+default us':>13} {'/ORT':>6}   cores used (ORT, ts, ts+default; others)")
    print(f"threads={args.threads} rounds={rounds}{' (quick)' if args.quick else ''} "
          f"load average before={load_before[0]:.2f} (on {os.cpu_count()} CPUs)")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        o, t, d = r["onnxruntime"], r["tensorsmith"], r["tensorsmith_default"]
        print(f"{name:<20} {r['batch']:>5} {o['median_us']:>9.1f} {t['median_us']:>9.1f} "
              f"{t['ratio_vs_ort']:>7.2f} {d['median_us']:>13.1f} {d['ratio_vs_ort']:>6.2f}   "
              f"{o['cores_used']:.2f}, {t['cores_used']:.2f}, {d['cores_used']:.2f}; "
              f"{r['other_processes_cores'] if r['other_processes_cores'] is None else round(r['other_processes_cores'], 2)}")
    busy = [n for n, r in results.items() if (r["other_processes_cores"] or 0) > 0.2]
    if busy:
        print(f"WARNING: other processes kept > 0.2 cores busy while timing {', '.join(busy)}; "
              f"those numbers (multi-threaded ones most) are skewed: rerun on a quiet host")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
