"""Call overhead of a tensorsmith-compiled model (no passes) against jax.jit of the same function.

With ``passes=[]`` the compiled program is the model itself, so any difference in
steady-state latency is what tensorsmith adds per call (argument handling, param passing,
pytree work). Every timed call is a hit of the executable cache: "ratio" for a model
compiled with example inputs, "sym" for the same model compiled with a symbolic batch dim
(one graph, one executable per shape), "numpy" for numpy inputs and numpy outputs on both sides
(the numpy hot path; each of those calls timed on its own, the round's median kept). Both sides get the same device-resident params and inputs, are warmed up,
then timed in interleaved rounds (alternating which goes first) so that host noise hits
both alike; the reported ratio is the median of the per-round ratios.

  python benchmarks/overhead.py [--quick] [--target cpu|gpu] [--rounds 30] [--calls 200] [--max-ratio 1.05]
                                [--out benchmarks/results/overhead.json]

Exit status 1 when a model's median ratio exceeds --max-ratio.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import tensorsmith  # noqa: E402
from tensorsmith import codegen  # noqa: E402
from tensorsmith.codegen.executor import setup_cpu_dispatch  # noqa: E402
from tensorsmith.ir.serialize import atomic_write  # noqa: E402

MODELS = ("mlp", "cnn", "transformer_block")


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_times(fn, params, args, repeats: int) -> dict:
    """Seconds to trace+import, to lower to StableHLO and for XLA to compile, ours vs jax.jit.

    Every repeat lowers a fresh function object, so neither jax's caches nor XLA's serve
    an earlier result.
    """
    graph = tensorsmith.trace(fn, *args, params=params)
    flat = tuple(graph.params.values())

    def lower_compile(make):
        lower, comp = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            lowered = jax.jit(make()).lower(*make.example)
            t1 = time.perf_counter()
            lowered.compile()
            lower.append(t1 - t0)
            comp.append(time.perf_counter() - t1)
        return statistics.median(lower), statistics.median(comp)

    def ours():
        return codegen.to_jax(graph)
    ours.example = (flat, *args)

    def base():
        return lambda p, *a: fn(p, *a)
    base.example = (params, *args)

    lower_s, xla_s = lower_compile(ours)
    jax_lower_s, jax_xla_s = lower_compile(base)
    return {
        "trace_s": _median_time(lambda: tensorsmith.trace(fn, *args, params=params), repeats),
        "compile_call_s": _median_time(lambda: tensorsmith.compile(fn, *args, params=params,
                                                                   passes=[]), repeats),
        "lower_s": lower_s, "xla_compile_s": xla_s,
        "jax_lower_s": jax_lower_s, "jax_xla_compile_s": jax_xla_s,
    }


def latency(fn, params, args, rounds: int, calls: int, warmup: int, target: str = "cpu") -> dict:
    """Median per-call seconds of each side and the median per-round ratio ours / jax.jit."""
    cm = tensorsmith.compile(fn, *args, params=params, passes=[], target=target)
    # The same model with a symbolic batch dim: one graph, an executable per shape, so
    # every timed call below is a cache hit of the compile-once path.
    sym = tensorsmith.compile(fn, *args, params=params, passes=[], target=target, batch_dim=True)
    base = jax.jit(fn)
    device = jax.devices(target)[0]
    p_dev = jax.device_put(params, device)
    a_dev = tuple(jax.device_put(a, device) for a in args)
    a_np = tuple(np.asarray(a) for a in args)
    to_np = partial(jax.tree_util.tree_map, np.asarray)
    sides = {"tensorsmith": lambda: cm(*a_dev), "jax_jit": lambda: base(p_dev, *a_dev),
             "symbolic": lambda: sym(*a_dev),
             # numpy in, numpy out (what an inference server does): the numpy hot path
             "tensorsmith_numpy": lambda: to_np(cm(*a_np)),
             "jax_jit_numpy": lambda: to_np(base(p_dev, *a_np))}
    # the same numbers, or the comparison is meaningless
    np.testing.assert_allclose(np.asarray(sides["tensorsmith"]()), np.asarray(sides["jax_jit"]()),
                               rtol=1e-5, atol=1e-5)
    for run in sides.values():
        for _ in range(warmup):
            out = run()
        jax.block_until_ready(out)
    per_call = {k: [] for k in sides}
    ratios, sym_ratios, np_ratios = [], [], []
    order = list(sides)
    clock = time.perf_counter
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            run = sides[k]
            if k.endswith("_numpy"):
                # numpy out means each call has finished: time each on its own and keep the
                # round's median, which a busy host's preemptions do not shift (a round's
                # mean of ~1 ms of calls is inflated several-fold by one preemption).
                ts = []
                for _ in range(calls):
                    t0 = clock()
                    run()
                    ts.append(clock() - t0)
                per_call[k].append(statistics.median(ts))
                continue
            t0 = clock()
            for _ in range(calls):
                out = run()
            jax.block_until_ready(out)
            per_call[k].append((clock() - t0) / calls)
        ratios.append(per_call["tensorsmith"][-1] / per_call["jax_jit"][-1])
        sym_ratios.append(per_call["symbolic"][-1] / per_call["jax_jit"][-1])
        np_ratios.append(per_call["tensorsmith_numpy"][-1] / per_call["jax_jit_numpy"][-1])
    info, sym_info = cm.cache_info(), sym.cache_info()
    # every timed call was a hit: one compile for the one signature, nothing re-imported
    assert info.compiles == 1 and sym_info.compiles == 1 and sym_info.specializations == 0, \
        (info, sym_info)
    return {"tensorsmith_us": statistics.median(per_call["tensorsmith"]) * 1e6,
            "jax_jit_us": statistics.median(per_call["jax_jit"]) * 1e6,
            "ratio": statistics.median(ratios),
            "ratio_p25": float(np.percentile(ratios, 25)), "ratio_p75": float(np.percentile(ratios, 75)),
            "symbolic_us": statistics.median(per_call["symbolic"]) * 1e6,
            "symbolic_ratio": statistics.median(sym_ratios),
            "numpy_us": statistics.median(per_call["tensorsmith_numpy"]) * 1e6,
            "jax_jit_numpy_us": statistics.median(per_call["jax_jit_numpy"]) * 1e6,
            "numpy_ratio": statistics.median(np_ratios),
            "cache_hits": info.hits, "symbolic_cache_hits": sym_info.hits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds/calls (CI smoke run)")
    ap.add_argument("--target", default="cpu", choices=["cpu", "gpu", "tpu"],
                    help="device to time on (gpu/tpu need that hardware on this host)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (30)")
    ap.add_argument("--calls", type=int, default=None, help="calls per round (200)")
    ap.add_argument("--max-ratio", type=float, default=1.05,
                    help="fail when tensorsmith/jax.jit median latency exceeds this")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.json"))
    args = ap.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 30)
    calls = args.calls or (50 if args.quick else 200)
    build_repeats = 3 if args.quick else 5

    from zoo import ZOO
    results = {}
    for name in args.models.split(","):
        if name not in ZOO:
            import difflib
            close = difflib.get_close_matches(name, ZOO, n=1)
            ap.error(f"unknown model {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                     + f"; choose from {', '.join(ZOO)}")
        fn, params, example = ZOO[name]()
        results[name] = {**latency(fn, params, example, rounds, calls, warmup=max(20, calls // 4),
                                 target=args.target),
                         **build_times(fn, params, example, build_repeats)}

    report = {
        "benchmark": "overhead", "baseline": "jax.jit(fn)", "max_ratio": args.max_ratio,
        "target": args.target,
        "rounds": rounds, "calls_per_round": calls,
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "jax": jax.__version__, "backend": jax.default_backend(),
                 "devices": [str(d) for d in jax.devices()],
                 "cpu_dispatch": list(setup_cpu_dispatch())},
        "models": results,
    }
    atomic_write(Path(args.out), (json.dumps(report, indent=2) + "\n").encode())

    head = (f"{'model':<18} {'ours us':>9} {'jit us':>9} {'ratio':>6} {'sym':>6} {'numpy':>6} {'trace ms':>9} "
            f"{'lower ms':>9} {'xla ms':>8} {'jit lower':>9} {'jit xla':>8}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(f"{name:<18} {r['tensorsmith_us']:>9.1f} {r['jax_jit_us']:>9.1f} {r['ratio']:>6.3f} "
              f"{r['symbolic_ratio']:>6.3f} {r['numpy_ratio']:>6.3f} "
              f"{r['trace_s'] * 1e3:>9.1f} {r['lower_s'] * 1e3:>9.1f} {r['xla_compile_s'] * 1e3:>8.1f} "
              f"{r['jax_lower_s'] * 1e3:>9.1f} {r['jax_xla_compile_s'] * 1e3:>8.1f}")
    print(f"wrote {args.out}")
    bad = {k: round(max(r["ratio"], r["symbolic_ratio"], r["numpy_ratio"]), 3)
           for k, r in results.items()
           if max(r["ratio"], r["symbolic_ratio"], r["numpy_ratio"]) > args.max_ratio}
    if bad:
        print(f"FAIL: latency ratio above {args.max_ratio}: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
