"""Calibration peak memory of ``quantize`` with histogram observers at 16, 64 and 256 batches.

Each count runs in a fresh process: the digits CNN (fold-batchnorm + fuse), calibration
batches of ``--batch`` training samples (cycled), one warm-up quantize on 2 batches (so XLA's
compilations are not counted), then the measured ``quantize{observer=...}``. Measured: the
peak resident set above the process's RSS just before the run (/proc/self/statm sampled every
2 ms by a thread), the tracemalloc peak (Python and numpy allocations) and the calibration
data's own size. Observers keep fixed-size histograms, never activations, so the peak must
not grow with the number of batches: ``ratio_256_16`` ~ 1. For scale, ``activations_mib`` is
what storing every observed activation would take.

  python benchmarks/calibration_memory.py [--out benchmarks/results/calibration_memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "calibration_memory.json"
BASE = "default,fold-batchnorm,fuse,dce"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _Sampler(threading.Thread):
    """The highest RSS seen while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = _rss()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)


def measure(n: int, batch: int, observer: str) -> dict:
    """One measurement in this process (run it in a fresh one)."""
    import numpy as np

    import tensorsmith
    from tensorsmith import codegen, examples
    from tensorsmith.examples.train_digits_cnn import load_data
    from tensorsmith.passes import PassContext, run_pipeline
    ex = examples.load("digits-cnn")
    x_train = load_data()[0]
    fl = tensorsmith.compile(ex.fn, x_train[:8], params=ex.params, batch_dim=True,
                             passes=BASE).graph
    starts = [(i * batch) % (len(x_train) - batch) for i in range(n)]
    cal = [(np.ascontiguousarray(x_train[s:s + batch]),) for s in starts]
    spec = f"quantize{{observer={observer},debug_batches=0}}"

    def run(batches):
        ctx = PassContext(executor=codegen.executor, calibration=batches, progress=False)
        out, hist = run_pipeline(fl, spec, ctx, verify_ir=False)
        return hist

    run(cal[:2])  # warm-up: the probe's compilation and JAX's caches
    observed = [v for v in run(cal[:1])[-1].graph.nodes if v.op == "quantize"]
    act_bytes = 0
    for q in observed:  # activation fake-quants: what storing them all would cost
        t = q.inputs[0].type
        if q.inputs[0].name not in fl.params:
            act_bytes += int(np.prod([batch if not isinstance(d, int) else d for d in t.shape])) * 4
    base = _rss()
    sampler = _Sampler()
    sampler.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    run(cal)
    seconds = time.perf_counter() - t0
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sampler.done.set()
    sampler.join()
    return {"batches": n, "batch": batch, "observer": observer,
            "calibration_data_mib": round(sum(a.nbytes for b in cal for a in b) / 2 ** 20, 2),
            "activations_mib": round(act_bytes * n / 2 ** 20, 2),
            "peak_rss_above_start_mib": round((sampler.peak - base) / 2 ** 20, 2),
            "peak_traced_mib": round(traced / 2 ** 20, 2), "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--counts", default="16,64,256")
    ap.add_argument("--batch", type=int, default=128, help="samples per batch (default: 128)")
    ap.add_argument("--observers", default="entropy,percentile")
    ap.add_argument("--child", nargs=3, metavar=("N", "BATCH", "OBSERVER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        n, b, obs = args.child
        print(json.dumps(measure(int(n), int(b), obs)))
        return 0
    rows = []
    for obs in args.observers.split(","):
        for n in (int(c) for c in args.counts.split(",")):
            p = subprocess.run([sys.executable, __file__, "--child", str(n), str(args.batch), obs],
                               capture_output=True, text=True, check=True)
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    ratios = {}
    for obs in args.observers.split(","):
        mine = {r["batches"]: r for r in rows if r["observer"] == obs}
        lo, hi = min(mine), max(mine)
        ratios[obs] = {
            f"rss_ratio_{hi}_{lo}": round(max(mine[hi]["peak_rss_above_start_mib"], 1.0)
                                          / max(mine[lo]["peak_rss_above_start_mib"], 1.0), 2),
            f"traced_ratio_{hi}_{lo}": round(mine[hi]["peak_traced_mib"]
                                             / mine[lo]["peak_traced_mib"], 2)}
    result = {"load_average_1min": os.getloadavg()[0], "rows": rows, "ratios": ratios,
              "note": "RSS ratios floor each peak at 1 MiB (below that it is page-level noise)"}
    print(json.dumps(ratios))
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
