"""First-call time of the onnx package's CNNs: compile() plus the first call, per model.

Each model runs in a fresh subprocess (no JAX/XLA cache shared between models), with the
initializers as shipped in ``onnx/backend/test/data/light/`` and random inputs; the output
is checked against onnxruntime on the same inputs.

  python benchmarks/first_call.py [--passes default] [--filter REGEX] [--goal 5] [--cache]
                                  [--out benchmarks/results/first_call.json]

JAX's persistent compilation cache (on by default in tensorsmith) is off in the child
processes, so the figures are compile times. ``--cache`` measures each model three times,
each in a fresh process: cache off, cache cold (an empty folder, which this process fills)
and cache warm (a second process reading what the first one wrote); the JSON then has
``cache_rows`` and ``--out`` defaults to ``first_call_cache.json``.

Exit status 1 when a model's first call (compile + call) takes longer than --goal seconds.
Wall time on a shared machine depends on its load, so each row also gives the process's CPU
seconds for compile + first call and the 1-minute load average when it ended.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).parent / "results" / "first_call.json"
CACHE_OUT = Path(__file__).parent / "results" / "first_call_cache.json"


def light_models() -> list[Path]:
    """The CNNs that ship with the onnx package."""
    import onnx
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return sorted(folder.glob("light_*.onnx"))


def measure_one(path: str, passes: str) -> dict:
    """compile() and first-call seconds of one model, in this process."""
    t0 = time.perf_counter()
    import numpy as np
    import onnx
    import onnxruntime as ort

    import tensorsmith
    t_import = time.perf_counter() - t0
    model = onnx.load(path)
    init = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    inputs = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        inputs.append(rng.standard_normal(shape).astype(np.float32))
    t1, c1 = time.perf_counter(), time.process_time()
    cm = tensorsmith.compile(path, passes=passes)
    t2 = time.perf_counter()
    out = [np.asarray(o) for o in cm(*inputs)]
    t3, c3 = time.perf_counter(), time.process_time()
    cm(*inputs)
    t4 = time.perf_counter()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    want = sess.run(None, dict(zip(names, inputs)))
    err = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(out, want))
    scale = max(float(np.max(np.abs(b))) for b in want)
    return {"model": Path(path).stem, "passes": passes, "import_tensorsmith_s": t_import,
            "compile_s": t2 - t1, "first_call_s": t3 - t2, "total_s": t3 - t1,
            "total_cpu_s": c3 - c1, "load_average_1min": os.getloadavg()[0],
            "second_call_s": t4 - t3, "nodes": len(cm.graph.nodes),
            "max_abs_err_vs_onnxruntime": err, "max_abs_output": scale}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", default="default")
    ap.add_argument("--filter", help="regex on the model file name")
    ap.add_argument("--goal", type=float, default=5.0, help="seconds allowed for compile + first call")
    ap.add_argument("--cache", action="store_true",
                    help="compare the persistent compile cache off / cold / warm per model")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the per-model subprocess
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.passes)))
        return 0
    paths = [p for p in light_models() if not args.filter or re.search(args.filter, p.name)]
    if args.cache:
        return cache_comparison(paths, args.passes, args.out or CACHE_OUT)
    args.out = args.out or DEFAULT_OUT
    rows, slow = [], []
    for p in paths:
        proc = _child(p, args.passes, "0")
        if proc.returncode != 0:
            rows.append({"model": p.stem, "error": proc.stderr.strip().splitlines()[-1:]})
            print(f"{p.stem:<22} FAILED: {rows[-1]['error']}", flush=True)
            slow.append(p.stem)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        if r["total_s"] > args.goal:
            slow.append(p.stem)
        print(f"{r['model']:<22} compile {r['compile_s']:6.2f} s  first call {r['first_call_s']:6.2f} s"
              f"  total {r['total_s']:6.2f} s, {r['total_cpu_s']:6.2f} s CPU (load "
              f"{r['load_average_1min']:.1f})  (then {1e3 * r['second_call_s']:.1f} ms/call; "
              f"|err| vs onnxruntime {r['max_abs_err_vs_onnxruntime']:.2g} of "
              f"{r['max_abs_output']:.2g})", flush=True)
    result = {"benchmark": "first_call", "goal_s": args.goal, "passes": args.passes,
              "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                       "python": platform.python_version()},
              "models": rows, "over_goal": slow}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(args.out, json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}" + (f"; over {args.goal:g} s: {', '.join(slow)}" if slow else ""))
    return 1 if slow else 0


def _child(path: Path, passes: str, cache: str) -> subprocess.CompletedProcess:
    """One fresh process measuring ``path`` with TENSORSMITH_COMPILE_CACHE=``cache``."""
    env = dict(os.environ, TENSORSMITH_COMPILE_CACHE=cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the comparison needs tensorsmith's set-up
    return subprocess.run([sys.executable, __file__, "--one", str(path), "--passes", passes],
                          capture_output=True, text=True, env=env)


def cache_comparison(paths: list[Path], passes: str, out: Path) -> int:
    """Per model, three fresh processes: cache off, cold (fills a new folder), warm (reads it)."""
    rows = []
    for p in paths:
        folder = tempfile.mkdtemp(prefix="tensorsmith-first-call-")
        os.chmod(folder, 0o700)
        row = {"model": p.stem}
        try:
            for label, cache in (("off", "0"), ("cold", folder), ("warm", folder)):
                proc = _child(p, passes, cache)
                if proc.returncode != 0:
                    row[label] = {"error": proc.stderr.strip().splitlines()[-1:]}
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                row[label] = {k: r[k] for k in ("compile_s", "first_call_s", "total_s",
                                                "total_cpu_s", "load_average_1min",
                                                "max_abs_err_vs_onnxruntime")}
            row["cache_bytes"] = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append(row)
        cells = "  ".join(f"{k} {row[k]['total_s']:6.2f} s" if "total_s" in row[k] else f"{k} FAILED"
                          for k in ("off", "cold", "warm"))
        print(f"{p.stem:<22} compile + first call: {cells}  (cache {row['cache_bytes'] / 1e6:.1f} MB,"
              f" load {os.getloadavg()[0]:.1f})", flush=True)
    result = {"benchmark": "first_call_cache", "passes": passes,
              "what": "compile() + first call in a fresh process: persistent compilation cache "
                      "off, cold (empty folder, filled by this process), warm (second process)",
              "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                       "python": platform.python_version()}, "cache_rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(out, json.dumps(result, indent=2).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
