"""layout and rewrite-grouped-conv on the onnx package's CNNs, against onnxruntime.

For each model (``light_<name>.onnx``, initializers randomized with a fixed seed, batch made
free by turning Reshape targets that pin it into ONNX's 0) and batch size, in one process:
tensorsmith as imported, after ``layout``, after ``layout,rewrite-grouped-conv`` (ShuffleNet;
grouped convs as one conv per group or, the default, a batched dot) and after
``fold-batchnorm,layout,rewrite-grouped-conv``; each compiled once with XLA:CPU's default
options and once with its YNNPACK fusion off
(``compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}``), against an onnxruntime
session (``intra_op_num_threads=threads``, graph optimizations on). Every side is a compiled
XLA executable called with numpy inputs and returning numpy outputs. Outputs are checked
against onnxruntime first (relative error), then timed in interleaved rounds
(``benchmarks/onnx_vs_ort.py: time_sides``); reported: medians and the median per-round
ratio to onnxruntime. The process is pinned to ``--threads`` CPUs before jax starts.

  python benchmarks/layout.py [--models resnet50,squeezenet,shufflenet] [--batches 1,8]
                              [--threads 2] [--rounds 7] [--sides ...]
                              [--out benchmarks/results/layout.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from onnx_vs_ort import pin_threads, time_sides  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "layout.json"
YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
SIDES = {  # label -> (pipeline, XLA compiler options)
    "imported": ("none", None),
    "layout": ("layout", None),
    "layout+grouped_split": ("layout,rewrite-grouped-conv{grouped=split}", None),
    "layout+grouped_dot": ("layout,rewrite-grouped-conv{grouped=dot}", None),
    "imported/ynn-off": ("none", YNN_OFF),
    "layout/ynn-off": ("layout", YNN_OFF),
    "layout+grouped_split/ynn-off": ("layout,rewrite-grouped-conv{grouped=split}", YNN_OFF),
    "layout+grouped_dot/ynn-off": ("layout,rewrite-grouped-conv{grouped=dot}", YNN_OFF),
    "fold+layout+grouped": ("fold-batchnorm,layout,rewrite-grouped-conv", None),
    "fold+layout+grouped/ynn-off": ("fold-batchnorm,layout,rewrite-grouped-conv", YNN_OFF),
    "fold+grouped": ("fold-batchnorm,rewrite-grouped-conv", None),  # NCHW as imported
    "fold+grouped/ynn-off": ("fold-batchnorm,rewrite-grouped-conv", YNN_OFF),
}
TOL = 1e-3  # max |error| relative to the largest |output| of onnxruntime


def light_model(name: str, batch: int, seed: int = 0):
    """light_<name>.onnx with fresh fan-in scaled initializers and batch ``batch``."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
                      / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    positive = {n.input[i] for n in m.graph.node if n.op_type == "BatchNormalization"
                for i in (1, 4)}
    inits = {}
    for k, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32:
            b = (rng.uniform(0.5, 1.5, a.shape) if init.name in positive else
                 rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[1:])) if a.ndim >= 2 else
                 rng.standard_normal(a.shape) * 0.1)
            m.graph.initializer[k].CopyFrom(numpy_helper.from_array(b.astype(np.float32), init.name))
        inits[init.name] = m.graph.initializer[k]
    for n in m.graph.node:  # a Reshape target pinning the batch to 1 copies it instead (0)
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
    feeds = {}
    for vi in m.graph.input:
        if vi.name not in inits:
            vi.type.tensor_type.shape.dim[0].dim_value = batch
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    if m.graph.node[-1].op_type == "Softmax":  # compare logits: random weights flatten softmax
        last = m.graph.node[-1]
        m.graph.output[0].name = last.input[0]
        m.graph.node.remove(last)
    return m, feeds


def _side(model, feeds, pipeline: str, options):
    """A zero-arg callable running the compiled program; its build seconds; the pass remarks."""
    import jax
    import numpy as np

    import tensorsmith
    from tensorsmith.codegen import to_jax

    t0 = time.perf_counter()
    cm = tensorsmith.compile(model, *feeds.values(), passes=pipeline)
    graph = cm.graph
    args = [feeds[v.name] for v in graph.inputs]
    params = tuple(jax.device_put(np.asarray(a)) for a in graph.params.values())
    lowered = jax.jit(to_jax(graph)).lower(params, *args)
    exe = lowered.compile(compiler_options=options) if options else lowered.compile()
    run = lambda: [np.asarray(o) for o in exe(params, *args)]  # noqa: E731
    run()
    remarks = [str(r) for rec in cm.history for r in rec.remarks
               if r.kind == "note" or "converted" in r.message]
    return run, time.perf_counter() - t0, remarks


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,squeezenet,shufflenet")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-s", type=float, default=0.3)
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated: " + ", ".join(SIDES))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    sides_wanted = args.sides.split(",")
    for s in sides_wanted:
        if s not in SIDES:
            ap.error(f"unknown side {s!r}; choose from {', '.join(SIDES)}")
    cpus = pin_threads(args.threads, argv)

    import jax
    import numpy as np
    import onnxruntime as ort

    from tensorsmith.ir.serialize import atomic_write

    load_before = os.getloadavg()
    rows = []
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            model, feeds = light_model(name, batch)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            want = sess.run(None, feeds)
            sides = {"onnxruntime": lambda sess=sess: sess.run(None, feeds)}
            row = {"model": name, "batch": batch, "build_s": {}, "rel_err_vs_ort": {},
                   "remarks": {}}
            for label in sides_wanted:
                pipeline, options = SIDES[label]
                if label.startswith("layout+grouped") and name != "shufflenet":
                    continue  # no grouped conv elsewhere: the same program as "layout"
                run, build, remarks = _side(model, feeds, pipeline, options)
                got = run()
                err = max(float(np.max(np.abs(g - w)) / max(1e-30, float(np.max(np.abs(w)))))
                          for g, w in zip(got, want))
                if err > TOL:
                    raise SystemExit(f"{name} batch {batch} {label}: relative error {err:.2e} "
                                     f"vs onnxruntime")
                sides[label] = run
                row["build_s"][label] = round(build, 2)
                row["rel_err_vs_ort"][label] = err
                row["remarks"][label] = remarks
            timing = time_sides(sides, args.rounds, args.round_s, 2 * args.round_s)
            row["timing"] = timing
            rows.append(row)
            line = "  ".join(f"{k} {v['ratio_vs_ort']:.2f}x" for k, v in timing.items()
                             if isinstance(v, dict) and "ratio_vs_ort" in v)
            print(f"{name:<11} b{batch}: ORT {timing['onnxruntime']['median_us'] / 1e3:8.2f} ms  "
                  f"{line}  (others busy {timing['other_processes_cores'] or 0:.2f} cores)",
                  flush=True)

    report = {"benchmark": "layout", "threads": args.threads, "cpus": cpus, "rounds": args.rounds,
              "sides": {k: {"passes": SIDES[k][0], "compiler_options": SIDES[k][1]}
                        for k in sides_wanted},
              "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                       "jax": jax.__version__, "onnxruntime": ort.__version__,
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "rows": rows}
    atomic_write(Path(args.out), (json.dumps(report, indent=2) + "\n").encode())
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"(on {os.cpu_count()} CPUs); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
