"""Peak memory of importing ONNX "folding bombs" against a trivial model (issue 15).

A bomb is a tiny file whose one node would produce a huge tensor if the importer evaluated
it (``ConstantOfShape [20000, 20000]`` is 106 bytes on disk and 1.6 GB as a float32 array).
Each model is imported (and, with ``--compile``, compiled without being called) in a fresh
subprocess; its peak RSS is read from ``resource.getrusage``. The goal: every bomb stays
within ``--max-extra-mb`` (100) of the trivial model.

  python benchmarks/import_memory.py [--compile] [--max-extra-mb 100]
                                     [--out benchmarks/results/import_memory.json]

Exit status 1 when a bomb exceeds the trivial model's peak by more than --max-extra-mb.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

DEFAULT_OUT = Path(__file__).parent / "results" / "import_memory.json"
SIDE = 20000  # a SIDE x SIDE float32 result: 1.6 GB


def _model(nodes, inits) -> onnx.ModelProto:
    g = h.make_graph(nodes, "bomb", [], [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _f32(name, values):
    return numpy_helper.from_array(np.array(values, np.float32), name)


def models() -> dict[str, onnx.ModelProto]:
    """The trivial model and one bomb per op whose output size a small input sets."""
    shape = _i64("s", [SIDE, SIDE])
    return {
        "trivial (Add of two [2] constants)": _model(
            [h.make_node("Add", ["a", "b"], ["y"])], [_f32("a", [1, 2]), _f32("b", [3, 4])]),
        "ConstantOfShape [20000,20000]": _model(
            [h.make_node("ConstantOfShape", ["s"], ["y"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32)))], [shape]),
        "Expand [1] -> [20000,20000]": _model(
            [h.make_node("Expand", ["one", "s"], ["y"])], [_f32("one", [1.0]), shape]),
        "Tile [1,1] x [20000,20000]": _model(
            [h.make_node("Tile", ["one", "s"], ["y"])], [_f32("one", [[1.0]]), shape]),
        "Range 0..4e8": _model(
            [h.make_node("Range", ["a", "b", "c"], ["y"])],
            [_f32("a", 0.0), _f32("b", float(SIDE * SIDE)), _f32("c", 1.0)]),
    }


_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
if sys.argv[2] == "compile":
    import tensorsmith
    tensorsmith.compile(sys.argv[1])
else:
    from tensorsmith.frontends.onnx import import_onnx
    import_onnx(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
"""


def measure(path: Path, mode: str) -> dict:
    """Peak RSS (MB) and wall time of one import in a fresh interpreter."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # tensorsmith is found as it is found here
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode], capture_output=True,
                       text=True, env=env, timeout=600)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]}
    kb, seconds = r.stdout.split()[-2:]
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "seconds": round(float(seconds), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="also compile (no call) each model")
    ap.add_argument("--max-extra-mb", type=float, default=100.0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    modes = ["import"] + (["compile"] if args.compile else [])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, m in models().items():
            path = Path(d) / f"{len(rows)}.onnx"
            path.write_bytes(m.SerializeToString())
            row = {"model": name, "file_bytes": path.stat().st_size}
            for mode in modes:
                row[mode] = measure(path, mode)
            rows.append(row)
    failed = False
    print(f"{'model':38s} {'bytes':>6s} " + " ".join(f"{m + ' MB':>12s} {'s':>6s}" for m in modes))
    for row in rows:
        cells = []
        for mode in modes:
            r = row[mode]
            base = rows[0][mode].get("peak_rss_mb")
            if "error" in r or base is None:
                cells.append(f"{'error':>12s} {'':>6s}")
                failed = True
                continue
            r["extra_mb"] = round(r["peak_rss_mb"] - base, 1)
            failed |= r["extra_mb"] > args.max_extra_mb
            cells.append(f"{r['peak_rss_mb']:>12.1f} {r['seconds']:>6.2f}")
        print(f"{row['model']:38s} {row['file_bytes']:>6d} " + " ".join(cells))
    for row in rows:
        for mode in modes:
            if "error" in row[mode]:
                print(f"  {row['model']} ({mode}): {row[mode]['error']}")
    from tensorsmith.ir.serialize import atomic_write
    result = {"benchmark": "import_memory", "max_extra_mb": args.max_extra_mb, "ok": not failed,
              "python": platform.python_version(), "onnx": onnx.__version__,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    atomic_write(args.out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"{'ok' if not failed else 'FAILED'}: each bomb within {args.max_extra_mb:.0f} MB of the "
          f"trivial model; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
