"""Quantization accuracy and calibration cost, measured in one run against float.

* accuracy: the bundled digits CNN (fold-batchnorm + fuse, then ``quantize{...}``), held-out
  top-1 accuracy of each scheme against the float model, with the debugger's worst SQNR;
  calibration uses training samples (the example's own train/test split), never held-out ones.
* bias correction: the same schemes followed by ``bias-correction``, accuracy and output SQNR.
* int4 weight-only QAT: PTQ, then ``tensorsmith.finetune`` through the fake-quant (STE, LSQ
  scales) on the training split with distillation from the float model, then ``lower-quant``
  (weights stored int4, packed); held-out accuracy of each.
* mixed precision: int4 weight-only under output-SQNR budgets (``quantize{budget=...}``):
  the layers kept in float, the output SQNR reached, held-out accuracy, each layer's
  sensitivity (output SQNR when it alone is quantized).
* calibration executor: the quantize pass's calibration over ``--batches`` batches with one
  compiled executor reused across batches, against a context that rebuilds it per batch
  (what ``ctx.run`` did: re-jit and re-upload the params each call), on the digits CNN and on
  a stack of wide dense layers.
* calibration memory: tracemalloc peak of the quantize pass over 16, 64 and 256 batches
  (observers keep bounded histograms, so the peak must stay flat).

(The speed of real low-precision execution is benchmarks/quant_speed.py.)

  python benchmarks/quant.py [--out benchmarks/results/quant.json] [--batches 10]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

import tensorsmith
from tensorsmith import codegen, examples
from tensorsmith.ir import GraphBuilder, TensorType
from tensorsmith.passes import PassContext, run_pipeline
from tensorsmith.passes.quant_debug import quant_report

DEFAULT_OUT = Path(__file__).parent / "results" / "quant.json"
BASE = "default,fold-batchnorm,fuse,dce"
SCHEMES = [
    "quantize{dtype=int8,weights=per_channel,activations=per_tensor}",
    "quantize{dtype=int8,observer=percentile}",
    "quantize{dtype=int8,observer=mse}",
    "quantize{dtype=int8,observer=entropy}",
    "quantize{dtype=uint8,scheme=affine}",
    "quantize{dtype=int8,weights=per_tensor}",
    "quantize{dtype=int8,activations=dynamic}",
    "quantize{dtype=fp8_e4m3}",
    "quantize{dtype=fp8_e5m2}",
    "quantize{dtype=int4,weights=group,group_size=32,activations=none}",
    "quantize{dtype=int4,weights=per_channel,activations=none}",
    # AIMET's empirical bias correction after PTQ (passes/bias_correction.py)
    "quantize{dtype=int8,weights=per_channel,activations=per_tensor},bias-correction",
    "quantize{dtype=int4,weights=per_channel,activations=none},bias-correction",
    "quantize{dtype=int4,weights=per_tensor,activations=none}",
    "quantize{dtype=int4,weights=per_tensor,activations=none},bias-correction",
]
QAT_SPEC = "quantize{dtype=int4,weights=per_channel,activations=none}"


def digits_calibration(n_batches: int = 4, batch: int = 32) -> list[tuple]:
    """Calibration batches from the digits training split (cycled when more are asked)."""
    from tensorsmith.examples.train_digits_cnn import load_data
    x_train = load_data()[0]
    starts = [(i * batch) % (len(x_train) - batch) for i in range(n_batches)]
    return [(x_train[s:s + batch],) for s in starts]


def accuracy(cal) -> list[dict]:
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    rows = []
    fl = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, passes=BASE)
    ref = np.asarray(fl(x), np.float64)
    acc_f = float(np.mean(np.argmax(ref, -1) == y))
    rows.append({"scheme": "float", "accuracy": acc_f, "drop_pt": 0.0})
    for spec in SCHEMES:
        t0 = time.perf_counter()
        cm = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True,
                                 calibration=cal, passes=f"{BASE},{spec}")
        seconds = time.perf_counter() - t0
        out = np.asarray(cm(x), np.float64)
        acc = float(np.mean(np.argmax(out, -1) == y))
        report = quant_report(cm)
        rows.append({"scheme": spec, "accuracy": acc, "drop_pt": round(100 * (acc_f - acc), 2),
                     "output_sqnr_db": round(_sqnr(ref, out), 2),
                     "worst_sqnr_db": report[0]["sqnr_db"], "worst_node": report[0]["node"],
                     "worst_op": report[0]["op"], "compile_seconds": round(seconds, 2),
                     "sqnr_db": {r["node"]: r["sqnr_db"] for r in report}})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sqnr_db"}), flush=True)
    return rows


def _sqnr(ref, out) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((out - ref) ** 2), 1e-300)))


def qat_int4(cal, steps: int = 300, batch: int = 64, lr: float = 3e-4) -> list[dict]:
    """int4 weight-only: PTQ, then QAT (finetune through the fake-quant with distillation
    from the float model, labels from the training split), then lowered to stored int4."""
    from tensorsmith.examples.train_digits_cnn import load_data
    from tensorsmith.finetune import finetune
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    x_train, _, y_train, _ = load_data()
    acc = lambda m: float(np.mean(np.argmax(np.asarray(m(x)), -1) == y))  # noqa: E731
    fl = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, passes=BASE)
    acc_f = acc(fl)
    ptq = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True, calibration=cal,
                              passes=f"{BASE},{QAT_SPEC}")
    r = np.random.default_rng(0)
    picks = [r.choice(len(x_train), batch, replace=False) for _ in range(steps)]
    data = [((x_train[i],), y_train[i]) for i in picks]
    t0 = time.perf_counter()
    qat, hist = finetune(ptq, data, steps=steps, lr=lr, alpha=0.5, progress=False)
    seconds = time.perf_counter() - t0
    low = tensorsmith.compile(qat.graph, passes="lower-quant")
    low_out = np.asarray(low(x)[0])
    acc_low = float(np.mean(np.argmax(low_out, -1) == y))
    agree = float(np.mean(np.argmax(low_out, -1) == np.argmax(np.asarray(qat(x)), -1)))
    kernels = lambda g: sum(np.asarray(v).nbytes for k, v in g.params.items()  # noqa: E731
                            if "kernel" in k and not k.endswith(("scale", "zero_point")))
    rows = [{"scheme": f"{QAT_SPEC} (PTQ)", "accuracy": acc(ptq),
             "drop_pt": round(100 * (acc_f - acc(ptq)), 2)},
            {"scheme": f"{QAT_SPEC} + QAT ({steps} steps x {batch}, adam lr {lr}, "
                       "distill kl alpha 0.5)", "accuracy": acc(qat),
             "drop_pt": round(100 * (acc_f - acc(qat)), 2), "train_seconds": round(seconds, 1),
             "loss_first": round(hist.loss[0], 5), "loss_last": round(hist.loss[-1], 5)},
            {"scheme": f"{QAT_SPEC} + QAT, lower-quant (int4 stored packed)",
             "accuracy": acc_low, "drop_pt": round(100 * (acc_f - acc_low), 2),
             "top1_agreement_with_fake_quant": agree,
             "kernel_bytes_ratio": round(kernels(low.graph) / kernels(fl.graph), 4)}]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def mixed_precision(cal, budgets=(20.0, 22.0, 25.0)) -> list[dict]:
    """int4 weight-only with an output-SQNR budget: which layers stay float, what it costs."""
    ex = examples.load("digits-cnn")
    x, y = ex.eval_data
    rows = []
    for budget in budgets:
        spec = f"quantize{{dtype=int4,activations=none,budget={budget}}}"
        cm = tensorsmith.compile(ex.fn, x[:8], params=ex.params, batch_dim=True,
                                 calibration=cal, passes=f"{BASE},{spec}")
        mp = cm.history[-1].data["mixed_precision"]
        acc = float(np.mean(np.argmax(np.asarray(cm(x)), -1) == y))
        rows.append({"scheme": spec, "budget_db": budget, "met": mp["met"],
                     "output_sqnr_db": mp["output_sqnr_db"],
                     "all_quantized_output_sqnr_db": cm.history[-1].data["output_sqnr_db"],
                     "float_layers": mp["float_layers"], "accuracy": acc,
                     "sensitivity_db": {r["node"]: r["alone_output_sqnr_db"]
                                        for r in quant_report(cm)}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class RebuildingContext(PassContext):
    """A context that runs each batch through ``ctx.run`` as it was: the executor built again
    (re-traced, params uploaded again) for every batch."""

    def run_batches(self, graph, batches, desc=""):
        for batch in batches:
            yield [np.asarray(o) for o in self.executor(graph, jit=True)(*batch)]


def dense_stack(width: int = 1024, depth: int = 12):
    """x -> (dense + relu) x depth: big weights, so re-uploading them per batch shows."""
    r = np.random.default_rng(0)
    b = GraphBuilder("dense_stack")
    h = b.input(TensorType(("N", width), "f32"), "x")
    for i in range(depth):
        w = b.param((r.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        h = b.op("relu", b.op("dot_general", h, w, contracting_dims=((1,), (0,))))
    return b.build([h])


def calibration_time(graph, cal, ctx_cls) -> float:
    ctx = ctx_cls(executor=codegen.executor, calibration=cal, progress=False)
    t0 = time.perf_counter()
    run_pipeline(graph, "quantize{debug_batches=0}", ctx, verify_ir=False)
    return time.perf_counter() - t0


def executor_reuse(n_batches: int) -> list[dict]:
    ex = examples.load("digits-cnn")
    fl = tensorsmith.compile(ex.fn, ex.eval_data[0][:8], params=ex.params, batch_dim=True,
                             passes=BASE)
    r = np.random.default_rng(1)
    models = [("digits-cnn", fl.graph, digits_calibration(n_batches)),
              ("dense 12x1024x1024", dense_stack(),
               [(r.normal(size=(64, 1024)).astype(np.float32),) for _ in range(n_batches)])]
    rows = []
    for name, graph, cal in models:
        calibration_time(graph, cal[:1], PassContext)  # warm JAX's own caches once
        reused = calibration_time(graph, cal, PassContext)
        rebuilt = calibration_time(graph, cal, RebuildingContext)
        rows.append({"model": name, "batches": n_batches, "reused_s": round(reused, 3),
                     "rebuilt_per_batch_s": round(rebuilt, 3),
                     "speedup": round(rebuilt / reused, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def calibration_memory(counts=(16, 64, 256)) -> list[dict]:
    ex = examples.load("digits-cnn")
    fl = tensorsmith.compile(ex.fn, ex.eval_data[0][:8], params=ex.params, batch_dim=True,
                             passes=BASE)
    rows = []
    for n in counts:
        cal = digits_calibration(n)
        data_mib = sum(a.nbytes for b in cal for a in b) / 2 ** 20
        ctx = PassContext(executor=codegen.executor, calibration=cal, progress=False)
        tracemalloc.start()
        run_pipeline(fl.graph, "quantize{observer=entropy,debug_batches=0}", ctx, verify_ir=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append({"batches": n, "calibration_data_mib": round(data_mib, 2),
                     "peak_traced_mib": round(peak / 2 ** 20, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--batches", type=int, default=10, help="batches for the executor timing")
    args = ap.parse_args(argv)
    result = {"load_average_1min": os.getloadavg()[0],
              "accuracy": accuracy(digits_calibration(4)),
              "qat_int4": qat_int4(digits_calibration(4)),
              "mixed_precision": mixed_precision(digits_calibration(4)),
              "executor_reuse": executor_reuse(args.batches),
              "calibration_memory": calibration_memory()}
    from tensorsmith.ir.serialize import atomic_write
    atomic_write(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
