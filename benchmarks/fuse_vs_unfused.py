"""Fusion must never slow a model down: ``default`` vs ``default,fuse`` latency, interleaved medians.

The fused composites are inlined by codegen, so XLA should see the same program:

  python benchmarks/fuse_vs_unfused.py [--rounds 15] [--out benchmarks/results/fuse_vs_unfused.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "onnx"))

import models  # noqa: E402
import tensorsmith  # noqa: E402
from tensorsmith.ir.serialize import atomic_write  # noqa: E402


def _times(fn, args, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t)
    return out


def _jax_mlp():
    r = np.random.default_rng(0)
    shapes = {"w1": (256, 512), "b1": (512,), "w2": (512, 512), "b2": (512,), "w3": (512, 10), "b3": (10,)}
    p = {k: r.standard_normal(s).astype(np.float32) * 0.05 for k, s in shapes.items()}

    def mlp(p, x):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        h = jax.nn.gelu(h @ p["w2"] + p["b2"])
        return jax.numpy.tanh(h @ p["w3"] + p["b3"])

    x = r.standard_normal((32, 256)).astype(np.float32)
    return mlp, (x,), p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    mlp, mlp_args, mlp_params = _jax_mlp()
    cases = [("resnet_cnn (onnx) batch 8", models.resnet_cnn(), list(models.resnet_inputs(8).values()), None),
             ("mlp_dynamic (onnx) batch 64", models.mlp_dynamic(), list(models.mlp_inputs(64).values()), None),
             ("jax mlp batch 32", mlp, list(mlp_args), mlp_params)]
    rows = []
    for name, model, args, params in cases:
        extra = {} if params is None else {"params": params}
        ex = () if params is None else tuple(args)
        plain = tensorsmith.compile(model, *ex, passes="default", **extra)
        fused = tensorsmith.compile(model, *ex, passes="default,fuse", **extra)
        for f in (plain, fused):
            _times(f, args, 5)  # compile and warm up
        tp, tf = [], []
        for _ in range(a.rounds):  # interleaved, so drift hits both alike
            tp += _times(plain, args, 20)
            tf += _times(fused, args, 20)
        mp, mf = statistics.median(tp), statistics.median(tf)
        names = [n.attrs["name"] for n in fused.graph.nodes if n.op == "composite"
                 and n.attrs["name"].startswith("fused.")]
        rows.append({"model": name, "default_us": mp * 1e6, "fused_us": mf * 1e6,
                     "ratio": mf / mp, "fused": names})
        print(f"{name:30s} default {mp * 1e6:9.0f} us  default,fuse {mf * 1e6:9.0f} us  "
              f"ratio {mf / mp:.3f}  ({len(names)} fused)")
    if a.out:
        atomic_write(a.out, json.dumps({"host": platform.processor() or platform.machine(),
                                        "rows": rows}, indent=2).encode())


if __name__ == "__main__":
    main()
