"""ONNX's light_squeezenet under tensorsmith vs onnxruntime, and the cost of the safe softmax.

    PYTHONPATH=. python benchmarks/softmax_overflow.py   (from the folder above the package)
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
import onnx
import onnxruntime as ort

import tensorsmith as ts
from tensorsmith.codegen.rules.softmax import safe_softmax


def squeezenet() -> None:
    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_squeezenet.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(path)
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = np.asarray(ts.compile(path)(x)[0])
    print(f"light_squeezenet: NaN {int(np.isnan(got).sum())}/{got.size}; max |tensorsmith - "
          f"onnxruntime| = {np.nanmax(np.abs(got - want)):.3g}")


def timing(rows: int = 256, cols: int = 1000, calls: int = 200, rounds: int = 9) -> None:
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


if __name__ == "__main__":
    squeezenet()
    timing()
