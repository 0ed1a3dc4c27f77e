"""fold-batchnorm on the onnx package's CNNs: batch-norms left, error vs onnxruntime, latency.

Initializers are randomized with a fixed seed (fan-in scaled weights, BN variances and scales
in [0.5, 1.5]) so the folded weights are not the shipped constants. Each model is compiled
twice, with ``--base`` and with ``fold-batchnorm,<base>``; calls alternate between the two
(interleaved medians over ``--rounds``). Threads are whatever XLA takes on this host.

  python benchmarks/fold_batchnorm.py [--models resnet50,inception_v2] [--batch 1]
                                      [--rounds 20] [--base default]
                                      [--out benchmarks/results/fold_batchnorm.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_weights import redraw_initializers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).parent / "results" / "fold_batchnorm.json"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def randomized(path: Path, seed: int = 0) -> onnx.ModelProto:
    """The model with fresh fan-in scaled initializers (BN statistics kept valid), up to its
    logits."""
    m = onnx.load(str(path))
    redraw_initializers(m, np.random.default_rng(seed), lambda fan_in: 1 / np.sqrt(fan_in))
    last = m.graph.node[-1]
    if last.op_type == "Softmax":  # compare logits: random weights give a flat softmax
        m.graph.output[0].name = last.input[0]
        m.graph.node.remove(last)
    return m


def measure(name: str, batch: int, rounds: int, base: str) -> dict:
    import tensorsmith
    m = randomized(LIGHT / f"light_{name}.onnx")
    init = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(1)
    inputs = {}
    for vi in m.graph.input:
        if vi.name not in init:
            shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
            inputs[vi.name] = rng.standard_normal([batch] + shape[1:]).astype(np.float32)
    args = list(inputs.values())
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    sides = {"base": base, "folded": f"fold-batchnorm,{base}"}
    cms, row = {}, {"model": name, "batch": batch}
    for side, passes in sides.items():
        cm = tensorsmith.compile(m, *args, passes=passes)
        got = [np.asarray(o) for o in cm(*args)]
        row[f"{side}_batch_norms"] = cm.ir().count("= batch_norm(")
        row[f"{side}_max_rel_err_vs_onnxruntime"] = max(
            float(np.max(np.abs(g.astype(np.float64) - w)) / max(1e-30, float(np.max(np.abs(w)))))
            for g, w in zip(got, want))
        cms[side] = cm
    rec = cms["folded"].history.find("fold-batchnorm")
    row["folded_applied"] = sum(r.kind == "applied" for r in rec.remarks)
    row["folded_missed"] = [str(r) for r in rec.remarks if r.kind == "missed"]
    row["fold_pass_s"] = rec.seconds
    times = {s: [] for s in cms}
    for _ in range(rounds):
        for side, cm in cms.items():
            t0 = time.perf_counter()
            for o in cm(*args):
                np.asarray(o)
            times[side].append(time.perf_counter() - t0)
    for side in cms:
        row[f"{side}_median_ms"] = 1e3 * statistics.median(times[side])
    row["folded_over_base"] = row["folded_median_ms"] / row["base_median_ms"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--base", default="default")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        row = measure(name, args.batch, args.rounds, args.base)
        print(json.dumps(row), flush=True)
        rows.append(row)
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(args.out, json.dumps({"load_average_1min": os.getloadavg()[0], "rows": rows}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent))
    sys.exit(main())
