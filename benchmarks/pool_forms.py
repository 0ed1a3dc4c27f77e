"""rewrite-pool against XLA:CPU's reduce_window: relu(x + b) -> 3x3/2 max pool, NHWC, at the
pool shapes of the onnx package's CNNs (AlexNet, SqueezeNet, ResNet-50, Inception v2).

Each shape is compiled through tensorsmith twice, ``passes="none"`` (reduce_window) and
``passes="rewrite-pool"`` (max of 9 strided slices), outputs checked equal, then timed in
interleaved rounds; reported: median ms per call each and the median per-round ratio.

  python benchmarks/pool_forms.py [--threads 2] [--rounds 15] [--out benchmarks/results/pool_forms.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = [(8, 55, 55, 96), (8, 27, 27, 256), (8, 13, 13, 256), (1, 55, 55, 96),
          (8, 111, 111, 64), (8, 56, 56, 192)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pool_forms.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from fuse import pin
    pin(args.threads)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    import tensorsmith
    from tensorsmith.ir.serialize import atomic_write

    def pool(x, b):
        return lax.reduce_window(jax.nn.relu(x + b), -jnp.inf, lax.max, (1, 3, 3, 1),
                                 (1, 2, 2, 1), "VALID")
    load = os.getloadavg()
    rows = []
    for shape in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        b = rng.standard_normal(shape[-1]).astype(np.float32)
        sides = {p: tensorsmith.compile(pool, x, b, passes=p) for p in ("none", "rewrite-pool")}
        outs = {p: np.asarray(cm(x, b)) for p, cm in sides.items()}
        assert np.array_equal(outs["none"], outs["rewrite-pool"]), shape
        times = {p: [] for p in sides}
        for _ in range(args.rounds):
            for p, cm in sides.items():
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < 0.05:
                    np.asarray(cm(x, b))
                    n += 1
                times[p].append((time.perf_counter() - t0) / n * 1e3)
        row = {"shape": shape, **{f"{p}_ms": statistics.median(v) for p, v in times.items()},
               "ratio": statistics.median(s / r for r, s in zip(times["none"],
                                                                times["rewrite-pool"]))}
        rows.append(row)
        print(f"{str(shape):<20} reduce_window {row['none_ms']:8.3f} ms  slices "
              f"{row['rewrite-pool_ms']:8.3f} ms  ratio {row['ratio']:.2f}", flush=True)
    report = {"benchmark": "pool_forms", "threads": args.threads, "rounds": args.rounds,
              "loadavg_before": load, "loadavg_after": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
