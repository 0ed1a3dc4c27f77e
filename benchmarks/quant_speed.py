"""lower-quant speed on CPU: real low precision against float, same run, interleaved medians.

Two stacks of dense layers (x @ W, relu between):
- memory-bound: batch 1 (and each of ``--mem-batches``), ``--mem-dim`` square weights (4096:
  64 MiB of f32 per layer): weight-only int8 (per channel) and int4 (groups of 128) against
  float, each as ``lower-quant`` builds it (the weight streamed through a loop of chunks up to
  ``stream_rows`` rows of activations) and as the whole-weight form (``stream_rows=0``:
  dequantize the whole weight, then one dot);
- compute-bound: batch 256, ``--compute-dim`` square weights: W8A8 int8 (and fp8 e4m3) against
  float; the fake-quant graph is timed too.
Each variant is the float graph through ``quantize{...}`` (calibrated on random batches) and
``lower-quant``. Calls rotate over the variants every round (interleaved), medians (and
minima) over ``--rounds``; the 1-minute load average is recorded before and after. Finally
``lower-quant{min_speedup=1}`` is run on each fake-quant graph to record what the pass itself
decides from its own measurement.

  python benchmarks/quant_speed.py [--mem-dim 4096] [--mem-batches 1,8,32] [--compute-dim 2048]
                                   [--layers 4] [--rounds 20] [--out benchmarks/results/quant_speed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).parent / "results" / "quant_speed.json"


def dense_stack(dim: int, layers: int, batch: int, seed: int = 0):
    """x[batch, dim] -> (dot W_i, relu) x layers, fan-in scaled weights."""
    from tensorsmith.ir import GraphBuilder, TensorType
    rng = np.random.default_rng(seed)
    b = GraphBuilder("stack")
    h = b.input(TensorType((batch, dim), "f32"), "x")
    for i in range(layers):
        w = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
        h = b.op("dot_general", h, b.param(w, f"w{i}"), contracting_dims=((1,), (0,)))
        if i < layers - 1:
            h = b.op("relu", h)
    return b.build([h])


def transform(graph, pipeline: str, calibration):
    from tensorsmith import codegen
    from tensorsmith.passes import PassContext, run_pipeline
    ctx = PassContext(executor=codegen.executor, calibration=calibration)
    out, _ = run_pipeline(graph, pipeline, ctx)
    return out, ctx.remarks


def weight_bytes(graph) -> int:
    from tensorsmith.ir.types import TensorType
    return sum(TensorType.of(a).nbytes() for k, a in graph.params.items()
               if k.startswith("w") and "scale" not in k and "correction" not in k)


def interleaved(fns: dict, x, rounds: int) -> tuple[dict, dict]:
    """Median and min seconds per call of each fn, calls rotating over the fns every round."""
    import jax
    for f in fns.values():  # compile and warm
        jax.block_until_ready(f(x))
        jax.block_until_ready(f(x))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(x))
            times[k].append(time.perf_counter() - t0)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()})


def bench(name: str, dim: int, layers: int, batch: int, variants: dict, rounds: int,
          fake_quant: bool = True) -> dict:
    """``variants``: label -> (quantize pipeline, lower pipeline); the first lowering of each
    quantize pipeline also records what ``min_speedup=1`` decides."""
    import jax.numpy as jnp
    import tensorsmith
    rng = np.random.default_rng(1)
    float_g = dense_stack(dim, layers, batch)
    calib = [(rng.standard_normal((batch, dim)).astype(np.float32),) for _ in range(2)]
    x = jnp.asarray(rng.standard_normal((batch, dim)).astype(np.float32))
    graphs = {"float": float_g}
    decided, fakes, notes = {}, {}, {}
    for label, (quant, lower) in variants.items():
        if quant not in fakes:
            fakes[quant], _ = transform(float_g, quant, calib)
            # what the pass decides when asked to prove a speedup over its float twin
            lower_opts = lower[len("lower-quant"):].strip("{}")
            opts = ", ".join(o for o in (lower_opts, "min_speedup=1.0, repeats=5") if o)
            _, rem = transform(fakes[quant], f"lower-quant{{{opts}}}", calib)
            verdict = [r for r in rem if "fake-quant" in r.message or "measured" in r.message]
            decided[label] = {"kept_fake_quant": any(r.kind == "missed" for r in verdict),
                              "pass_measured_speedup": round(dict(verdict[0].data)["speedup"], 3)
                              if verdict else None}
            if fake_quant:
                graphs[f"{label} fake-quant"] = fakes[quant]
        low, remarks = transform(fakes[quant], lower, calib)
        graphs[label] = low
        applied = [r for r in remarks if r.kind == "applied"]
        notes[label] = {"lowered": len(applied),
                        "streamed": sum("stream_steps" in dict(r.data) for r in applied)}
    fns = {k: tensorsmith.compile(g, passes="none") for k, g in graphs.items()}
    ref = np.asarray(fns["float"](x))
    load_before = os.getloadavg()[0]
    med, low_t = interleaved(fns, x, rounds)
    rows = {}
    for k, g in graphs.items():
        out = np.asarray(fns[k](x))
        rows[k] = {"median_ms": round(med[k] * 1e3, 3),
                   "speedup_vs_float": round(med["float"] / med[k], 3),
                   "min_ms": round(low_t[k] * 1e3, 3),
                   "min_speedup_vs_float": round(low_t["float"] / low_t[k], 3),
                   "weight_bytes": weight_bytes(g),
                   "weight_bytes_vs_float": round(weight_bytes(g) / weight_bytes(float_g), 4),
                   "max_rel_error_vs_float": float(np.abs(out - ref).max() / np.abs(ref).max())}
        rows[k].update(decided.get(k, {}), **notes.get(k, {}))
    return {"name": name, "dim": dim, "layers": layers, "batch": batch,
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "results": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem-dim", type=int, default=4096)
    ap.add_argument("--mem-batches", default="1,8,32",
                    help="batch sizes of the memory-bound stack (comma separated)")
    ap.add_argument("--compute-dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import jax
    q8 = "quantize{activations=none}"
    q4 = "quantize{dtype=int4, weights=group, group_size=128, activations=none}"
    whole = "lower-quant{stream_rows=0}"
    mem = [bench(f"memory-bound, batch {b}", args.mem_dim, args.layers, b, {
        "weight-only int8": (q8, "lower-quant"),
        "weight-only int8, whole weight": (q8, whole),
        "weight-only int4 g128": (q4, "lower-quant"),
        "weight-only int4 g128, whole weight": (q4, whole),
    }, args.rounds, fake_quant=False) for b in map(int, args.mem_batches.split(","))]
    comp = bench("compute-bound, batch 256", args.compute_dim, args.layers, 256, {
        "W8A8 int8": ("quantize", "lower-quant"),
        "fp8 e4m3": ("quantize{dtype=fp8_e4m3}", "lower-quant"),
    }, args.rounds)
    report = {"benchmark": "quant_speed", "host": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
              "rounds": args.rounds, "stacks": [*mem, comp]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for s in report["stacks"]:
        print(f"{s['name']} ({s['layers']} x {s['dim']}x{s['dim']}, load {s['load_1min']})")
        for k, r in s["results"].items():
            extra = (f"  pass(min_speedup=1): {'kept fake-quant' if r['kept_fake_quant'] else 'lowered'}"
                     f" ({r['pass_measured_speedup']}x)" if "kept_fake_quant" in r else "")
            print(f"  {k:36s} {r['median_ms']:9.3f} ms  {r['speedup_vs_float']:6.2f}x  "
                  f"(min {r['min_ms']:8.3f} ms {r['min_speedup_vs_float']:5.2f}x)  "
                  f"bytes {r['weight_bytes_vs_float']:.3f}x  err {r['max_rel_error_vs_float']:.1e}{extra}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
