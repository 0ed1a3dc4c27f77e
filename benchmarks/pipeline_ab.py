"""Two pipelines on one of fuse.py's models with the XLA options held fixed (XLA's defaults, and
YNNPACK fusion off), timed in interleaved rounds; the median per-round ratio B / A per setting.

``xla-options`` measures its choice at compile time, and under load it can choose differently
for two pipelines, which hides what the passes themselves change; this holds the options fixed.

  python benchmarks/pipeline_ab.py squeezenet 8 [--a PIPELINE] [--b optimize] [--rounds 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OLD = "canonicalize,cse,fold-constants,fold-batchnorm,layout,rewrite-grouped-conv,fuse,dce"
SETTINGS = {"ynn-default": {}, "ynn-off": {"xla_cpu_experimental_ynn_fusion_type": ""}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("--a", default=OLD, help="baseline pipeline (default: optimize before "
                                             "rewrite-pool)")
    ap.add_argument("--b", default="optimize")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import fuse
    fuse.pin(args.threads)
    import numpy as np

    import tensorsmith
    model, make = fuse.cnn(args.model) if args.model in fuse.CNNS else fuse.extra(args.model)
    inputs = list(make(args.batch).values())
    sides = {}
    for setting, opts in SETTINGS.items():
        for label, p in (("a", args.a), ("b", args.b)):
            cm = tensorsmith.compile(model, *inputs, passes=p, compiler_options=opts or None)
            cm(*inputs)
            sides[label, setting] = cm
    times = {k: [] for k in sides}
    for _ in range(args.rounds):
        for k, cm in sides.items():
            n, t0 = 0, time.perf_counter()
            while True:
                [np.asarray(o) for o in cm(*inputs)]
                n += 1
                if time.perf_counter() - t0 > 0.3:
                    break
            times[k].append((time.perf_counter() - t0) / n * 1e3)
    for setting in SETTINGS:
        a, b = times["a", setting], times["b", setting]
        ratio = statistics.median(y / x for x, y in zip(a, b))
        print(f"{args.model} b{args.batch} {setting:<12} A {statistics.median(a):9.2f} ms  "
              f"B {statistics.median(b):9.2f} ms  B/A {ratio:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
