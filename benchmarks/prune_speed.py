"""Does channel pruning pay? 50% channels removed from a compute-bound CNN and a wide MLP,
pruned vs dense latency of the compiled programs, interleaved medians, in one run.

- ``cnn``: NHWC 16x16x3 -> conv 64 (stride 2) -> conv 128 -> conv 128 -> conv 128 (+ bias, relu)
  -> global mean -> dense 10; ~370k params; batch 64.
- ``mlp``: 784 -> 2048 -> 2048 -> 10 with relu; batch 64.

Both are JAX functions with fixed-seed weights compiled twice by tensorsmith, with no pass and
with ``prune{pattern=channel,sparsity=0.5}``; calls alternate (interleaved medians over
``--rounds``). A third compile adds ``min_speedup=1.2``: the pass's own timing verdict. The pruned program is checked against the JAX function on the weights with the
removed channels zeroed (it must be equal), so the speed is that of an exact program.

  python benchmarks/prune_speed.py [--target cpu] [--rounds 20]
                                   [--out benchmarks/results/prune_speed_<target>.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRUNE = "prune{pattern=channel,sparsity=0.5}"


def _w(r, *shape):
    fan_in = int(np.prod(shape[:-1]))
    return (r.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def cnn():
    """Four 3x3 convs (64, 128, 128, 128 channels), global mean, dense; batch 64 of 16x16x3."""
    import jax
    import jax.numpy as jnp
    r = np.random.default_rng(0)
    chans = [3, 64, 128, 128, 128]
    p = {f"conv{i}": {"k": _w(r, 3, 3, chans[i], chans[i + 1]),
                      "b": (0.1 * r.standard_normal(chans[i + 1])).astype(np.float32)}
         for i in range(4)}
    p["fc"] = {"w": _w(r, 128, 10)}

    def fn(p, x):
        for i in range(4):
            x = jax.lax.conv_general_dilated(x, p[f"conv{i}"]["k"], (2, 2) if i == 0 else (1, 1),
                                             "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + p[f"conv{i}"]["b"])
        return jnp.mean(x, (1, 2)) @ p["fc"]["w"]
    return fn, p, (r.standard_normal((64, 16, 16, 3)).astype(np.float32),)


def mlp():
    """784 -> 2048 -> 2048 -> 10, relu; batch 64."""
    import jax
    r = np.random.default_rng(1)
    dims = [784, 2048, 2048, 10]
    p = {f"l{i}": {"w": _w(r, dims[i], dims[i + 1]),
                   "b": (0.1 * r.standard_normal(dims[i + 1])).astype(np.float32)}
         for i in range(3)}

    def fn(p, x):
        for i in range(3):
            x = x @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
            x = jax.nn.relu(x) if i < 2 else x
        return x
    return fn, p, (r.standard_normal((64, 784)).astype(np.float32),)


MODELS = {"cnn": cnn, "mlp": mlp}


def _masked_params(params, graph):
    """``params`` with the channels the prune pass removes set to zero (the masked model)."""
    import copy
    from tensorsmith.passes import PassContext
    from tensorsmith.passes.prune import plan_structured
    from tensorsmith.passes.prune_groups import zero_units
    an, remove = plan_structured(graph, PassContext(), sparsity=0.5, pattern="channel")
    out = copy.deepcopy(params)
    for name, arr in zero_units(graph, an, remove).params.items():
        node = out
        *path, leaf = name.split("/")
        for k in path:
            node = node[k]
        node[leaf] = np.asarray(arr)
    return out


def measure(name: str, target: str, rounds: int) -> dict:
    import jax
    import tensorsmith
    from tensorsmith.ir import graph_stats
    fn, params, args = MODELS[name]()
    dense = tensorsmith.compile(fn, *args, params=params, passes=[], target=target)
    pruned = tensorsmith.compile(fn, *args, params=params, passes=PRUNE, target=target)
    want = np.asarray(fn(_masked_params(params, dense.graph), *args))
    got = np.asarray(pruned(*args))
    err = float(np.max(np.abs(got - want)) / max(1e-30, float(np.max(np.abs(want)))))
    times = {"dense": [], "pruned": []}
    for cm in (dense, pruned):
        jax.block_until_ready(cm(*args))
    for i in range(rounds):
        order = (("dense", dense), ("pruned", pruned)) if i % 2 == 0 else \
            (("pruned", pruned), ("dense", dense))
        for side, cm in order:
            t0 = time.perf_counter()
            jax.block_until_ready(cm(*args))
            times[side].append(time.perf_counter() - t0)
    # the speed-checked form: the pass times both programs itself and keeps or reverts
    checked = tensorsmith.compile(fn, *args, params=params, target=target,
                                  passes=PRUNE[:-1] + ",min_speedup=1.2}")
    verdict = [r for r in checked.history.find("prune").remarks
               if "min_speedup" in r.message]
    # zeros alone (50% unstructured) do not make a dense XLA program faster: reverted
    zeros = tensorsmith.compile(fn, *args, params=params, target=target,
                                passes="prune{sparsity=0.5,min_speedup=1.2}")
    z_verdict = [r for r in zeros.history.find("prune").remarks if "min_speedup" in r.message]
    a, b = graph_stats(dense.graph), graph_stats(pruned.graph)
    md, mp = statistics.median(times["dense"]), statistics.median(times["pruned"])
    return {"model": name, "target": target, "batch": int(args[0].shape[0]),
            "dense_params": a.param_elems, "pruned_params": b.param_elems,
            "dense_flops": a.flops, "pruned_flops": b.flops,
            "flops_ratio": round(b.flops / a.flops, 4),
            "dense_ms": round(1e3 * md, 3), "pruned_ms": round(1e3 * mp, 3),
            "latency_ratio": round(mp / md, 4), "rounds": rounds,
            "max_rel_err_vs_masked_jax": err,
            "min_speedup_1.2": {"kept": graph_stats(checked.graph).flops < a.flops,
                                "remark": verdict[0].message if verdict else ""},
            "unstructured_50_min_speedup_1.2": {
                "kept": graph_stats(zeros.graph).sparsity > 0.25,
                "remark": z_verdict[0].message if z_verdict else ""}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT.parent))
    rows = [measure(m, args.target, args.rounds) for m in args.models.split(",")]
    import jax
    result = {"benchmark": "prune_speed", "pipeline": PRUNE, "host": platform.node(),
              "device": str(jax.devices(args.target)[0].device_kind), "rows": rows}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / \
        f"prune_speed_{args.target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['model']:4s} {r['target']}: dense {r['dense_ms']:.2f} ms, pruned "
              f"{r['pruned_ms']:.2f} ms, latency x{r['latency_ratio']:.2f}, FLOPs "
              f"x{r['flops_ratio']:.2f}, err {r['max_rel_err_vs_masked_jax']:.1e}")
        print(f"     channel 50%, min_speedup=1.2: {r['min_speedup_1.2']['remark']}")
        print(f"     unstructured 50%, min_speedup=1.2: "
              f"{r['unstructured_50_min_speedup_1.2']['remark']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
