"""Latency of tensorsmith-compiled PyTorch models vs torch eager and torch.compile, on CPU.

Models (random weights; MiniLM with its real pretrained weights, offline): ResNet-18,
MobileNetV2, an LSTM tagger, all-MiniLM-L6-v2 sentence embeddings. Each model is imported
through torch.export (``tensorsmith.compile(module, *inputs)``, default pipeline plus
fold-batchnorm), and the three sides are timed in the same process in interleaved rounds
(the order rotates every round). Reported per side: median per-call latency; per model the
median over rounds of the per-round ratio tensorsmith / torch eager and tensorsmith /
torch.compile (< 1: tensorsmith faster), and the max abs difference of the outputs.

  python benchmarks/torch_vs_xla.py [--quick] [--models resnet18,mobilenet_v2,lstm,minilm]
                                    [--threads N] [--no-torch-compile]
                                    [--out benchmarks/results/torch_vs_xla.json]

``--threads N`` pins the process to N CPUs (XLA's pool follows the mask) and gives torch N
threads. On a machine loaded beyond its cores, torch's OpenMP barriers stall when a thread
is descheduled (MiniLM eager measured 2.8 s with 2 threads, 0.14 s with 1 on a 2-core host
at load 16): compare with ``--threads 1`` there. The 1-minute load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "torch_vs_xla.json"
sys.path.insert(0, str(ROOT / "tests" / "torch"))


def build(name: str, quick: bool):
    """(module, example inputs, passes, description)."""
    import torch
    import torch_models as tm
    torch.manual_seed(0)
    if name == "resnet18":
        size = 64 if quick else 112
        return (tm.randomize_bn(tm.ResNet18()).eval(), (torch.randn(1, 3, size, size),),
                "optimize,xla-options", f"ResNet-18, 1x3x{size}x{size}")
    if name == "mobilenet_v2":
        size = 64 if quick else 112
        return (tm.randomize_bn(tm.MobileNetV2()).eval(), (torch.randn(1, 3, size, size),),
                "optimize,xla-options", f"MobileNetV2, 1x3x{size}x{size}")
    if name == "lstm":
        return (tm.LSTMTagger().eval(), (torch.randint(0, 100, (8, 32)),), "default",
                "LSTM tagger (2 layers, hidden 48), 8x32 tokens")
    if name == "minilm":
        model, tok = tm.minilm()
        text = ["The committee postponed its decision on the new railway line until next "
                "spring, citing unresolved concerns about noise and cost."] * 4
        enc = tok.encode_batch(text)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        return (model.eval(), (ids, mask), "default",
                f"all-MiniLM-L6-v2, {ids.shape[0]}x{ids.shape[1]} tokens")
    raise SystemExit(f"unknown model {name!r}")


def sides_for(name: str, quick: bool, torch_compile: bool) -> tuple[dict, dict]:
    import torch

    import tensorsmith
    module, inputs, passes, desc = build(name, quick)
    arrays = tensorsmith.api._numpy_args(inputs)
    meta = {"model": desc, "passes": passes}
    t0 = time.perf_counter()
    cm = tensorsmith.compile(module, *inputs, passes=passes)
    meta["tensorsmith_compile_s"] = time.perf_counter() - t0

    def run_ts():
        out = cm(*arrays)
        (out[0] if isinstance(out, (tuple, list)) else out).block_until_ready()
        return out

    def run_eager():
        with torch.no_grad():
            return module(*inputs)

    sides = {"torch eager": run_eager, "tensorsmith": run_ts}
    if torch_compile:
        compiled = torch.compile(module)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(*inputs)
        meta["torch_compile_first_call_s"] = time.perf_counter() - t0

        def run_inductor():
            with torch.no_grad():
                return compiled(*inputs)
        sides["torch.compile"] = run_inductor
    ref = run_eager().detach().numpy()
    meta["max_abs_diff"] = {k: float(np.max(np.abs(np.asarray(f() if k != "torch eager" else ref,
                                                                 dtype=np.float64) - ref)))
                            for k, f in sides.items() if k != "torch eager"}
    return sides, meta


def time_sides(sides: dict, rounds: int, round_s: float) -> dict:
    """Interleaved rounds; per side median/p25/p75 ms per call; ratios per round."""
    names = list(sides)
    per_round = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            fn, ts, t_end = sides[n], [], time.perf_counter() + round_s
            while True:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
                if time.perf_counter() >= t_end and len(ts) >= 3:
                    break
            per_round[n].append(statistics.median(ts))
    out = {}
    for n in names:
        v = sorted(per_round[n])
        out[n] = {"median_ms": statistics.median(v) * 1e3, "p25_ms": v[len(v) // 4] * 1e3,
                  "p75_ms": v[(3 * len(v)) // 4] * 1e3}
    for base in ("torch eager", "torch.compile"):
        if base in per_round:
            ratios = [a / b for a, b in zip(per_round["tensorsmith"], per_round[base])]
            out["tensorsmith"][f"ratio_vs_{base.replace(' ', '_').replace('.', '_')}"] = \
                statistics.median(ratios)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer rounds")
    ap.add_argument("--models", default="resnet18,mobilenet_v2,lstm,minilm")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (9; quick 3)")
    ap.add_argument("--round-s", type=float, default=None, help="seconds per side per round")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile side")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPUs for both sides (default: all this process may use)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    allowed = sorted(os.sched_getaffinity(0))
    threads = args.threads or len(allowed)
    if threads > len(allowed):
        raise SystemExit(f"--threads {threads}: this process may only run on {len(allowed)} CPUs")
    os.sched_setaffinity(0, allowed[:threads])  # before jax starts its CPU client
    import jax
    import torch
    torch.set_num_threads(threads)
    rounds = args.rounds or (3 if args.quick else 9)
    round_s = args.round_s or (0.3 if args.quick else 1.0)
    result = {"host": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "jax": jax.__version__,
                       "threads": threads, "torch_threads": torch.get_num_threads(),
                       "load_avg_1min_start": os.getloadavg()[0],
                       "jax_backend": jax.default_backend()},
              "rounds": rounds, "round_s": round_s, "models": {}}
    for name in args.models.split(","):
        sides, meta = sides_for(name, args.quick, not args.no_torch_compile)
        meta["latency"] = time_sides(sides, rounds, round_s)
        result["models"][name] = meta
        lat = meta["latency"]
        line = "  ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in lat.items())
        ratios = {k: v for k, v in lat["tensorsmith"].items() if k.startswith("ratio")}
        print(f"{meta['model']}: {line}  {ratios}  max|diff| {meta['max_abs_diff']}", flush=True)
    result["host"]["load_avg_1min_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
