"""Cost of ir.infer_types (re-inference after a shape change) against ir.verify on the same graph.

Both walk every node through its op's type rule; infer_types also builds the new graph and
carries shape attributes. Timed in interleaved rounds (alternating which goes first); the
table shows the best round of each (the least disturbed by other load), the JSON also medians. The "shrunk" row re-infers the digits CNN after its last conv
lost 8 of 32 channels (the params a structured pruning pass would slice).

  python benchmarks/infer_types.py [--rounds 50] [--out benchmarks/results/infer_types.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "onnx"))

from tensorsmith import ir  # noqa: E402
from tensorsmith.frontends.onnx import import_onnx  # noqa: E402
from tensorsmith.ir.serialize import atomic_write  # noqa: E402


def _graphs():
    import models
    import zoo

    for name, (build, _) in models.MODELS.items():
        yield f"onnx/{name}", import_onnx(build()), None
    for name in ("digits", "transformer_block"):
        yield f"jax/{name}", zoo.traced(name, batch_dim=True), None
    g = zoo.traced("digits", batch_dim=True)
    p, keep = dict(g.params), np.setdiff1d(np.arange(32), np.arange(0, 32, 4))
    upd = {"params/Conv_1/kernel": p["params/Conv_1/kernel"][..., keep],
           "params/Dense_0/kernel": p["params/Dense_0/kernel"][
               (np.arange(16)[:, None] * 32 + keep).reshape(-1)]}
    for k in ["params/Conv_1/bias"] + [f"params/BatchNorm_1/{s}" for s in ("bias", "mean", "scale", "var")]:
        upd[k] = p[k][keep]
    yield "jax/digits shrunk 32->24 channels", g.with_params(upd), g


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "infer_types.json"))
    args = ap.parse_args()
    rows = []
    for name, g, before in _graphs():
        ref = before if before is not None else g  # verify needs a consistent graph
        infer, verify = [], []
        for r in range(args.rounds):
            pair = [(infer, lambda: ir.infer_types(g)), (verify, lambda: ir.verify(ref))]
            for bucket, fn in (pair if r % 2 else pair[::-1]):
                bucket.append(_once(fn))
        rows.append({"graph": name, "nodes": sum(1 for _ in g.walk()),
                     "infer_types_ms": 1e3 * min(infer), "verify_ms": 1e3 * min(verify),
                     "infer_types_median_ms": 1e3 * statistics.median(infer),
                     "verify_median_ms": 1e3 * statistics.median(verify)})
    atomic_write(Path(args.out), (json.dumps({"rows": rows}, indent=2) + "\n").encode())
    print("| graph | nodes | infer_types ms | verify ms | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['graph']} | {r['nodes']} | {r['infer_types_ms']:.2f} | {r['verify_ms']:.2f} | "
              f"{r['infer_types_ms'] / r['verify_ms']:.2f} |")


if __name__ == "__main__":
    main()
