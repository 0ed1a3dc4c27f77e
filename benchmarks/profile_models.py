"""Where the time goes, per model: tensorsmith's heavy ops against onnxruntime's nodes (issue 16).

For each model and batch (the randomized ``light_*.onnx`` CNNs of ``fuse.py``, or its extras):

- tensorsmith: the model compiled with ``--passes``; every heavy node of the optimized IR (conv
  and ``fused.conv_*`` composites, dots, batched dots from grouped convs, pools, concats,
  transposes, pads, reductions) compiled alone with the model's XLA options and timed on random
  inputs of its shapes (identical signatures once); the rest (element-wise work that XLA fuses
  around them, slices, the call) is the whole call's median minus their sum, floored at 0.
  Timed alone, an op also writes its output, which XLA may fuse away in the whole program
  (a concat feeding a conv, element-wise work after a pool), so the per-op figures are upper
  bounds. XLA's own per-thunk trace (``--trace``) is recorded too but cannot attribute convs and
  dots: their thunks run asynchronously and the events time only the launch.
- onnxruntime: ``SessionOptions.enable_profiling`` over ``--calls`` runs after a warm-up; one
  event per executed node (``cat == "Node"``), classified by op type (grouped and depthwise
  convs by the ONNX node's ``group``).

Per side: median ms per call, ms per call and share per kind, and the top ops. The JSON holds
everything; the console prints the kinds side by side and the top sinks.

  python benchmarks/profile_models.py [--models squeezenet:8,shufflenet:1] [--passes optimize,xla-options]
                                      [--calls 10] [--threads 2] [--top 8] [--trace] [--out FILE]
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_OUT = HERE / "results" / "profile_models.json"

MOVE_OPS = {"copy", "transpose", "bitcast", "reshape", "broadcast", "parameter", "constant",
            "tuple", "get-tuple-element", "bitcast-convert"}
PAD_SLICE_OPS = {"pad", "slice", "dynamic-slice", "dynamic-update-slice"}
ORT_KINDS = {"Conv": "conv", "NhwcConv": "conv", "FusedConv": "conv", "NhwcFusedConv": "conv",
             "QLinearConv": "conv",
             "Gemm": "dot", "FusedGemm": "dot", "MatMul": "dot", "FusedMatMul": "dot",
             "MaxPool": "pool", "AveragePool": "pool", "GlobalAveragePool": "pool",
             "GlobalMaxPool": "pool", "NhwcMaxPool": "pool", "Concat": "concat",
             "Transpose": "copy/transpose", "Reshape": "copy/transpose",
             "Flatten": "copy/transpose", "ReorderInput": "copy/transpose",
             "ReorderOutput": "copy/transpose", "Split": "pad/slice", "Slice": "pad/slice",
             "Pad": "pad/slice", "ReduceMean": "reduce", "ReduceSum": "reduce",
             "LRN": "other"}


# --- the optimized HLO ------------------------------------------------------------------------
_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+|\(.*?\))\s+([a-z][\w\-]*)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def parse_hlo(text: str) -> tuple[str, dict, dict]:
    """(module name, computation -> [(name, type, opcode, called computations)], entry name)."""
    module = re.search(r"HloModule\s+([\w.\-]+)", text).group(1)
    comps, entry, current = {}, None, None
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            m = _COMP.match(line)
            if m:
                current = m.group(2)
                comps[current] = []
                if m.group(1):
                    entry = current
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            op = m.group(3)
            if op == "dot" and "lhs_batch_dims" in line:
                op = "batched-dot"  # rewrite-grouped-conv's form of a grouped 1x1 conv
            comps[current].append((m.group(1), m.group(2), op, _CALLS.findall(line)))
    return module, comps, entry


def _opcodes(comps: dict, name: str, seen=None) -> set:
    """Every opcode a computation runs, following fusion ``calls=`` (not reducers)."""
    seen = set() if seen is None else seen
    if name in seen or name not in comps:
        return set()
    seen.add(name)
    out = set()
    for _, _, op, calls in comps[name]:
        out.add(op)
        for c in calls:
            out |= _opcodes(comps, c, seen)
    return out


def hlo_kind(ops: set) -> str:
    """The kind of work an HLO instruction (its opcodes, fusion bodies included) does."""
    if "convolution" in ops:
        return "conv"
    if "batched-dot" in ops:
        return "grouped conv"
    if "dot" in ops:
        return "dot"
    if "reduce-window" in ops:
        return "pool"
    if "custom-call" in ops:
        return "other"
    if "concatenate" in ops:
        return "concat"
    if "reduce" in ops:
        return "reduce"
    if ops <= MOVE_OPS | {"fusion"}:
        return "copy/transpose"
    if ops <= MOVE_OPS | PAD_SLICE_OPS | {"fusion"}:
        return "pad/slice"
    if "pad" in ops:  # arithmetic written into a padded buffer (a depthwise conv's input)
        return "elementwise+pad"
    if {"slice", "multiply", "add"} <= ops:  # shifted multiply-adds: rewrite-grouped-conv's
        return "depthwise conv"
    if ops & {"copy", "transpose"}:
        return "elementwise+transpose"
    return "elementwise"


def entry_kinds(text: str) -> tuple[str, dict]:
    """(module name, entry instruction -> {kind, type, opcodes})."""
    module, comps, entry = parse_hlo(text)
    out = {}
    for name, typ, op, calls in comps.get(entry, []):
        ops = {op} - {"fusion"}
        for c in calls:
            ops |= _opcodes(comps, c)
        out[name] = {"kind": hlo_kind(ops or {op}), "type": typ, "opcode": op,
                     "ops": sorted(ops)}
    return module, out


# --- the two profilers ------------------------------------------------------------------------
def profile_xla(run, module: str, calls: int) -> dict:
    """HLO op name -> total µs over ``calls`` traced calls of ``run`` (module's events only)."""
    import jax
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(calls):
            run()
        jax.profiler.stop_trace()
        files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise RuntimeError(f"jax.profiler wrote no trace file under {tmp}")
        with gzip.open(files[0]) as f:
            events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for e in events:
        a = e.get("args") or {}
        if e.get("ph") == "X" and a.get("hlo_module") == module and "hlo_op" in a:
            totals[a["hlo_op"]] += float(e.get("dur", 0.0))
    return dict(totals)


def profile_ort(model, feeds: dict, threads: int, calls: int) -> tuple[dict, dict]:
    """(node name -> total µs over ``calls`` profiled runs, node name -> {op, shapes})."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        sess.run(None, feeds)  # warm-up (its events are dropped below)
        t_start = None
        for i in range(calls):
            if i == 0:
                t_start = time.perf_counter()
            sess.run(None, feeds)
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_timed = runs[1]["ts"] if len(runs) > 1 else 0  # skip the warm-up run
    totals, info = collections.Counter(), {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e.get("ts", 0) < first_timed:
            continue
        a = e.get("args") or {}
        name = e["name"][: -len("_kernel_time")]
        totals[name] += float(e.get("dur", 0.0))
        info[name] = {"op": a.get("op_name", "?"),
                      "out": [list(d.values())[0] for d in a.get("output_type_shape", [])]}
    return dict(totals), info


def ir_kind(node) -> str | None:
    """The kind of a heavy IR node (timed alone), None for the light ones (timed as the rest)."""
    op = node.op
    if op == "composite":
        inner = {m.op for r in node.regions for m in r.walk()}
        if "conv" in inner:
            return "conv"
        if "dot_general" in inner:
            return "dot"
        return None
    if op == "conv":
        return "grouped conv" if node.attrs.get("feature_group_count", 1) > 1 else "conv"
    if op == "dot_general":
        batch = node.attrs.get("batch_dims") or ((), ())
        return "grouped conv" if any(batch) else "dot"
    return {"reduce_window": "pool", "concatenate": "concat", "transpose": "copy/transpose",
            "pad": "pad/slice", "reduce": "reduce"}.get(op)


def profile_nodes(graph, batch: int, options: dict, min_s: float = 0.05) -> tuple[dict, dict]:
    """(node name -> ms per call, node name -> {kind, op, type}) for the heavy nodes of the
    optimized IR, each compiled alone (with the executable's XLA options) on random inputs,
    symbolic dims set to ``batch``; identical signatures are timed once."""
    import numpy as np

    from tensorsmith.codegen import executor
    from tensorsmith.ir import Graph
    from tensorsmith.ir.types import numpy_dtype
    rng = np.random.default_rng(0)
    cache, times, info = {}, {}, {}
    for node in graph.nodes:
        kind = ir_kind(node)
        if kind is None:
            continue
        ins, seen = [], set()
        for v in node.inputs:
            if not graph.is_param(v) and v.name not in seen:
                seen.add(v.name)
                ins.append(v)
        inner = [node] + [m for r in node.regions for m in r.walk()]
        params = {v.name: graph.params[v.name] for m in inner for v in m.inputs
                  if graph.is_param(v)}
        sig = (node.op, repr(sorted(node.attrs.items())), tuple(str(v.type) for v in node.inputs),
               tuple(sorted(params)) if node.op == "composite" else ())
        if sig not in cache:
            sub = Graph("probe", tuple(ins), tuple(node.outputs), (node,), params)
            run = executor(sub, jit=True, compiler_options=options or None)
            xs = [rng.standard_normal([d if isinstance(d, int) else batch for d in v.type.shape])
                  .astype(numpy_dtype(v.type.dtype)) for v in ins]
            run(*xs)  # compile outside the timing
            cache[sig] = _median_ms(lambda: run(*xs), rounds=5, min_s=min_s)
        times[node.output.name] = cache[sig]
        info[node.output.name] = {"kind": kind, "op": node.op if node.op != "composite"
                                  else node.attrs.get("name"), "type": str(node.output.type)}
    return times, info


def conv_groups(model) -> dict:
    """ONNX conv node name -> (group, input channels per group) for grouped convs."""
    from onnx import numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        g = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and g > 1 and n.input[1] in inits:
            out[n.name] = (g, numpy_helper.to_array(inits[n.input[1]]).shape[1])
    return out


def _ort_kind(op: str, group) -> str:
    if group is not None and op in ("Conv", "FusedConv"):  # ORT keeps the ONNX node's name
        return "depthwise conv" if group[1] == 1 else "grouped conv"
    return ORT_KINDS.get(op, "elementwise")


def _summarize(totals: dict, kinds: dict, calls: int, top: int, describe) -> dict:
    per_kind = collections.Counter()
    for name, us in totals.items():
        per_kind[kinds(name)] += us
    total = sum(totals.values()) / calls / 1e3
    kind_rows = {k: {"ms": v / calls / 1e3, "share": v / max(sum(per_kind.values()), 1e-9),
                     "count": sum(1 for n in totals if kinds(n) == k)}
                 for k, v in per_kind.most_common()}
    tops = [{"op": name, "kind": kinds(name), "ms": us / calls / 1e3, **describe(name)}
            for name, us in collections.Counter(totals).most_common(top)]
    return {"profiled_ms_per_call": total, "kinds": kind_rows, "top": tops}


def _median_ms(run, rounds: int = 7, min_s: float = 0.2) -> float:
    times = []
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            run()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_s:
                break
        times.append(el / n * 1e3)
    return statistics.median(times)


def profile_model(name: str, batch: int, pipeline: str, threads: int, calls: int, top: int,
                  trace: bool = False) -> dict:
    """Both sides' profiles of one model at one batch."""
    import numpy as np

    import fuse
    import tensorsmith
    model, make = fuse.cnn(name) if name in fuse.CNNS else fuse.extra(name)
    feeds = make(batch)
    sides, _, _ = fuse.build_sides(model, feeds, [], threads)  # onnxruntime only
    cm = tensorsmith.compile(model, *feeds.values(), passes=pipeline)
    args = list(feeds.values())
    run = lambda: [np.asarray(o) for o in cm(*args)]  # noqa: E731
    run()
    wall = {"onnxruntime": _median_ms(sides["onnxruntime"]), "tensorsmith": _median_ms(run)}
    node_ms, node_info = profile_nodes(cm.graph, batch, cm.compiler_options)
    # what the heavy nodes alone do not account for: element-wise work (fused by XLA into
    # loops around them), slices, reshapes, and per-call overhead
    node_us = {k: v * 1e3 * calls for k, v in node_ms.items()}
    node_us["(rest: element-wise, slices, call)"] = \
        max(0.0, wall["tensorsmith"] - sum(node_ms.values())) * 1e3 * calls
    node_info["(rest: element-wise, slices, call)"] = {"kind": "rest", "op": "-", "type": ""}
    ort_totals, ort_info = profile_ort(model, feeds, threads, calls)
    groups = conv_groups(model)
    row = {"model": name, "batch": batch, "pipeline": pipeline,
           "compiler_options": cm.compiler_options, "wall_ms": wall,
           "ratio": wall["tensorsmith"] / wall["onnxruntime"],
           "tensorsmith": _summarize(
               node_us, lambda n: node_info[n]["kind"], calls, top,
               lambda n: {"type": f"{node_info[n]['op']} {node_info[n]['type']}"}),
           "onnxruntime": _summarize(
               ort_totals, lambda n: _ort_kind(ort_info[n]["op"], groups.get(n)), calls, top,
               lambda n: {"type": ort_info[n]["op"], "out": ort_info[n]["out"]})}
    module, entry = entry_kinds(cm.hlo(*args))
    row["tensorsmith"]["hlo_instructions_per_kind"] = dict(collections.Counter(
        v["kind"] for v in entry.values() if v["opcode"] not in MOVE_OPS - {"copy", "transpose"}))
    if trace:
        xla = profile_xla(run, module, calls)
        row["tensorsmith"]["xla_thunk_events"] = _summarize(
            xla, lambda n: entry.get(n, {}).get("kind", "other"), calls, top,
            lambda n: {"type": entry.get(n, {}).get("type"), "ops": entry.get(n, {}).get("ops")})
    return row


def _print(row: dict) -> None:
    w = row["wall_ms"]
    print(f"\n== {row['model']} b{row['batch']} ({row['pipeline']}): onnxruntime "
          f"{w['onnxruntime']:.2f} ms, tensorsmith {w['tensorsmith']:.2f} ms "
          f"({row['ratio']:.2f}x); profiled sum ORT {row['onnxruntime']['profiled_ms_per_call']:.2f}"
          f" / tensorsmith {row['tensorsmith']['profiled_ms_per_call']:.2f} ms")
    kinds = sorted(set(row["onnxruntime"]["kinds"]) | set(row["tensorsmith"]["kinds"]),
                   key=lambda k: -row["tensorsmith"]["kinds"].get(k, {"ms": 0})["ms"])
    print(f"  {'kind':<16}{'ORT ms':>9}{'(n)':>6}{'ts ms':>9}{'(n)':>6}{'ts/ORT':>9}")
    for k in kinds:
        o = row["onnxruntime"]["kinds"].get(k, {"ms": 0.0, "count": 0})
        x = row["tensorsmith"]["kinds"].get(k, {"ms": 0.0, "count": 0})
        r = f"{x['ms'] / o['ms']:.2f}" if o["ms"] > 0 else "-"
        print(f"  {k:<16}{o['ms']:9.2f}{o['count']:6d}{x['ms']:9.2f}{x['count']:6d}{r:>9}")
    for side in ("tensorsmith", "onnxruntime"):
        print(f"  top {side}:")
        for t in row[side]["top"]:
            print(f"    {t['ms']:7.3f} ms {t['kind']:<15} {t['op'][:40]:<40} {t.get('type')}"
                  f" {t.get('out', '') or ''}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="squeezenet:8,inception_v2:1,shufflenet:1,resnet50:8",
                    help="comma-separated NAME:BATCH (fuse.py's model names)")
    ap.add_argument("--passes", default="optimize,xla-options")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=20, help="profiled calls per side")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--trace", action="store_true",
                    help="also record XLA's per-thunk trace events (conv/dot thunks run async, "
                         "so their events time the launch, not the work)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    import fuse
    specs = []
    for item in args.models.split(","):
        name, _, b = item.partition(":")
        if name not in fuse.CNNS and name not in fuse.EXTRAS:
            ap.error(f"unknown model {name!r} (one of {', '.join([*fuse.CNNS, *fuse.EXTRAS])})")
        specs.append((name, int(b) if b else fuse.EXTRAS.get(name, 1)))
    cpus = fuse.pin(args.threads)
    import jax  # noqa: F401  (after pinning: XLA sizes its pool from the mask)

    from tensorsmith.ir.serialize import atomic_write
    load = os.getloadavg()
    rows = []
    for name, batch in specs:
        row = profile_model(name, batch, args.passes, args.threads, args.calls, args.top,
                            args.trace)
        rows.append(row)
        _print(row)
    report = {"benchmark": "profile_models", "pipeline": args.passes, "threads": args.threads,
              "cpus": cpus, "calls": args.calls, "loadavg_before": load,
              "loadavg_after": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, (json.dumps(report, indent=2, default=str) + "\n").encode())
    print(f"\nload average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
