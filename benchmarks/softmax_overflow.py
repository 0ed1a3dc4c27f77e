"""ONNX's light_squeezenet under tensorsmith vs onnxruntime, and the cost of the safe softmax.

    python benchmarks/softmax_overflow.py      # writes benchmarks/results/softmax_overflow.json
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import numpy as np
import onnx
import onnxruntime as ort

import tensorsmith as ts
from tensorsmith.codegen.rules.softmax import safe_softmax


def squeezenet() -> dict:
    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_squeezenet.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(path)
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = np.asarray(ts.compile(path)(x)[0])
    nan, diff = int(np.isnan(got).sum()), float(np.nanmax(np.abs(got - want)))
    print(f"light_squeezenet: NaN {nan}/{got.size}; max |tensorsmith - onnxruntime| = {diff:.3g}")
    return {"nan": nan, "size": int(got.size), "max_abs_diff_vs_onnxruntime": diff}


def timing(rows: int = 256, cols: int = 1000, calls: int = 200, rounds: int = 9) -> dict:
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    fns = {"jax.nn.softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
           "safe_softmax": jax.jit(lambda x: safe_softmax(x, -1))}
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn(x).block_until_ready()
    for _ in range(rounds):  # interleaved, so load on a shared machine hits both alike
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn(x).block_until_ready()
            runs[name].append((time.perf_counter() - t) / calls)
    for name, r in runs.items():
        print(f"{name}: median {np.median(r) * 1e6:.0f} us per call ({rows}x{cols} f32)")
    ratio = float(np.median(np.array(runs["safe_softmax"]) / np.array(runs["jax.nn.softmax"])))
    print(f"safe / jax.nn.softmax: median per-round ratio {ratio:.2f}")
    return {"median_s": {k: float(np.median(v)) for k, v in runs.items()}, "ratio": ratio,
            "shape": [rows, cols], "load_average": os.getloadavg()}


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results" / "softmax_overflow.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"light_squeezenet": squeezenet(), "softmax": timing()}
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
