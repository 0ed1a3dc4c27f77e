"""First call at a new input shape: what a compile-once model pays, on a ResNet-18-sized CNN.

A ResNet-18 layout (7x7 stem, max pool, four stages of two basic blocks, 64..512 channels,
11.7 M params, BatchNormalization kept) is built as ONNX with ``image: f32[N,3,H,W]``,
compiled once without example inputs, then called at several shapes. For each call it
records the wall time of the first call at that shape (re-import and pipeline when the model
specializes, plus XLA compile and one run), the time of a cached call at that shape, and the
cache's counters. The baseline is onnxruntime, which creates one session and runs any shape.

    python benchmarks/shape_compile.py [--shapes 1x224x224,1x192x256,2x160x160] [--repeats 5]
                                       [--out benchmarks/results/shape_compile.json]
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

import tensorsmith  # noqa: E402
from tensorsmith.ir.serialize import atomic_write  # noqa: E402

DEFAULT_SHAPES = "1x224x224,1x192x256,2x160x160,1x224x224"


def resnet18(classes: int = 1000):
    """ResNet-18 as ONNX (random weights from a fixed seed), input f32[N,3,H,W]."""
    from onnx import TensorProto as T
    from onnx import helper as h

    import models
    g = models._Graph(seed=18)
    x = models._conv_bn(g, "image", "stem", 3, 64, 7, 2, relu=True)
    x = g.node("MaxPool", [x], "stem.pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            x = models._basic_block(g, x, f"layer{stage}.{block}", cin, cout, stride)
            cin = cout
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    w = g.weight("fc.weight", classes, 512)
    b = g.small("fc.bias", classes)
    g.node("Gemm", [x, w, b], "logits", alpha=1.0, beta=1.0, transB=1)
    return g.model("resnet18", [h.make_tensor_value_info("image", T.FLOAT, ["N", 3, "H", "W"])],
                   [h.make_tensor_value_info("logits", T.FLOAT, ["N", classes])], 17)


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="NxHxW,... (a repeat shows a hit)")
    ap.add_argument("--repeats", type=int, default=5, help="cached calls timed per shape")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shape_compile.json"))
    args = ap.parse_args(argv)
    import onnxruntime as ort

    model = resnet18()
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    t0 = time.perf_counter()
    cm = tensorsmith.compile(model)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_session_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    rows = []
    for spec in args.shapes.split(","):
        n, hh, ww = (int(v) for v in spec.lower().split("x"))
        x = rng.standard_normal((n, 3, hh, ww)).astype(np.float32)
        before = cm.cache_info()
        t0 = time.perf_counter()
        got = np.asarray(cm(x)[0])
        first_s = time.perf_counter() - t0
        after = cm.cache_info()
        t0 = time.perf_counter()
        want = sess.run(None, {"image": x})[0]
        ort_first_s = time.perf_counter() - t0
        err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) or 1.0))
        rows.append({
            "shape": [n, 3, hh, ww], "first_call_s": first_s,
            "new_compile": after.compiles > before.compiles,
            "specialized": after.specializations > before.specializations,
            "xla_compile_s": after.compile_seconds - before.compile_seconds,
            "reimport_pipeline_s": after.specialize_seconds - before.specialize_seconds,
            "cached_call_s": _time(lambda: cm(x), args.repeats),
            "ort_first_run_s": ort_first_s,
            "ort_run_s": _time(lambda: sess.run(None, {"image": x}), args.repeats),
            "max_rel_err_vs_ort": err})
    info = cm.cache_info()
    report = {
        "benchmark": "shape_compile", "model": "resnet18 (ONNX, f32[N,3,H,W])", "params": n_params,
        "symbolic_graph": cm.symbolic, "compile_s": compile_s, "ort_session_s": ort_session_s,
        "calls": rows,
        "cache": {k: getattr(info, k) for k in ("hits", "misses", "compiles", "specializations",
                                                "pipeline_runs", "evictions", "size")},
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "jax": jax.__version__, "backend": jax.default_backend()},
    }
    atomic_write(Path(args.out), (json.dumps(report, indent=2) + "\n").encode())
    print(f"resnet18 ({n_params / 1e6:.1f} M params): compile() {compile_s:.2f} s "
          f"({'symbolic graph' if cm.symbolic else 're-imported per shape'}); "
          f"onnxruntime session {ort_session_s:.2f} s")
    print(f"{'shape':<16} {'first s':>8} {'xla s':>7} {'import s':>9} {'cached ms':>10} "
          f"{'ort ms':>8} {'rel err':>8}")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):<16} {r['first_call_s']:>8.2f} "
              f"{r['xla_compile_s']:>7.2f} {r['reimport_pipeline_s']:>9.2f} "
              f"{r['cached_call_s'] * 1e3:>10.1f} {r['ort_run_s'] * 1e3:>8.1f} "
              f"{r['max_rel_err_vs_ort']:>8.1e}")
    print(f"cache: {report['cache']}\nwrote {args.out}")
    bad = [r["shape"] for r in rows if r["max_rel_err_vs_ort"] > 1e-3]
    if bad:
        print(f"FAIL: outputs differ from onnxruntime at {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
