"""The `tensorsmith` command: compile, inspect, list passes, bisect a pipeline."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from .errors import UsageFailure

MODEL_HELP = """\
MODEL is one of:
  * the name of a bundled example: digits-cnn (the default when MODEL is omitted);
  * a file the frontends read: an ONNX model (.onnx), or IR saved by `--dump-ir` /
    tensorsmith.ir.save (.tsir, weights in the .npz beside it);
  * a Python reference `package.module:attr` (the current directory is importable) to an
    object with
        .fn              a JAX function, called fn(params, *inputs) (or fn(*inputs) when
                         .params is None)
        .params          a pytree of weights, or None
        .example_inputs  a tuple of example input arrays (used for tracing)
        .eval_data       optional (x, y): held-out inputs and integer labels
        .dynamic_shapes  optional, when .fn is a torch nn.Module: torch.export's spec of
                         symbolic dims, e.g. ({0: torch.export.Dim("batch", max=64)},)
    or to a zero-argument callable that returns such an object. .fn may be a PyTorch
    nn.Module (called fn(*inputs), imported through torch.export); an nn.Module with its own
    .example_inputs (and optional .dynamic_shapes) may also be given directly.
"""


class UsageError(UsageFailure):
    """A bad command line, model reference or data file; printed as one line, exit status 2."""


_USER_ERRORS: tuple[type, ...] = ()  # messages of these print without their type name


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# --- models -----------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """What a MODEL argument resolved to."""

    name: str
    model: Any  # a JAX callable, an ONNX path, or an ir.Graph
    params: Any = None
    example_inputs: tuple = ()
    eval_data: tuple | None = None
    dynamic_shapes: Any = None  # torch.export's spec, for an nn.Module

    @property
    def is_jax(self) -> bool:
        from .frontends.torch import is_torch_model
        from .ir import Graph
        return callable(self.model) and not isinstance(self.model, Graph) \
            and not is_torch_model(self.model)


def _from_object(obj, name: str, ref: str | None = None) -> ModelSpec:
    from .frontends.torch import is_torch_model
    ref = ref or name
    if is_torch_model(obj):  # an nn.Module that carries its example inputs
        if not hasattr(obj, "example_inputs"):
            raise UsageError(f"MODEL {ref!r}: a torch nn.Module needs .example_inputs (a tuple of "
                             "tensors), or give an object with .fn (the module) and .example_inputs")
        obj = _TorchSpec(obj)
    if not hasattr(obj, "fn") and callable(obj):
        try:
            obj = obj()
        except Exception as e:
            raise UsageError(f"MODEL {ref!r}: calling it with no arguments to get the model "
                             f"failed: {type(e).__name__}: {e}") from None
        if is_torch_model(obj):
            return _from_object(obj, name, ref)
    missing = [a for a in ("fn", "example_inputs") if not hasattr(obj, a)]
    if missing:
        raise UsageError(f"MODEL {ref!r}: the object has no {' or '.join('.' + m for m in missing)}"
                         " (it needs .fn, .params, .example_inputs; see `tensorsmith compile --help`)")
    if not callable(obj.fn):
        raise UsageError(f"MODEL {ref!r}: .fn is a {type(obj.fn).__name__}, not a function")
    inputs = obj.example_inputs
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    eval_data = getattr(obj, "eval_data", None)
    if eval_data is not None and len(eval_data) != 2:
        raise UsageError(f"MODEL {ref!r}: .eval_data must be a pair (x, y)")
    if is_torch_model(obj.fn):  # example tensors as numpy arrays, as every command passes them
        from .api import _numpy_args
        inputs = _numpy_args(inputs)
    return ModelSpec(str(getattr(obj, "name", None) or name), obj.fn, getattr(obj, "params", None),
                     inputs, tuple(eval_data) if eval_data is not None else None,
                     getattr(obj, "dynamic_shapes", None))


class _TorchSpec:
    """An nn.Module given directly as MODEL: its own .example_inputs / .dynamic_shapes."""

    def __init__(self, module):
        self.fn, self.example_inputs = module, module.example_inputs
        self.dynamic_shapes = getattr(module, "dynamic_shapes", None)
        self.eval_data = getattr(module, "eval_data", None)
        self.name = type(module).__name__


def resolve_model(ref: str | None) -> ModelSpec:
    """Turn a MODEL argument (example name, file, or module:attr) into a ModelSpec."""
    from . import examples
    ref = ref or "digits-cnn"
    if ref in examples.EXAMPLES:
        return _from_object(examples.load(ref), ref)
    path = Path(ref)
    if path.suffix in (".onnx", ".tsir") or path.is_file():
        if not path.is_file():
            raise UsageError(f"MODEL {ref!r}: no such file")
        if path.suffix == ".tsir":
            from .ir import load
            return ModelSpec(path.stem, load(path))
        return ModelSpec(path.stem, str(path))
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        if os.getcwd() not in sys.path:  # console scripts do not put the cwd on sys.path
            sys.path.insert(0, os.getcwd())
        try:
            obj = importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(f"MODEL {ref!r}: cannot import module {module_name!r}: {e}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"MODEL {ref!r}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return _from_object(obj, attr.split(".")[-1], ref)
    from .ir.registry import did_you_mean
    raise UsageError(f"MODEL {ref!r} is not a bundled example{did_you_mean(ref, examples.EXAMPLES)}, "
                     f"an existing .onnx/.tsir file, or a package.module:attr reference "
                     f"(examples: {', '.join(examples.EXAMPLES)})")


def _batch_dim(args, spec: ModelSpec):
    bd = args.batch_dim
    return None if (not spec.is_jax or bd.lower() == "none") else bd


def _synthetic_inputs(graph, seed: int = 0, symbol_size: int = 1) -> tuple:
    """Random inputs matching the graph's input types (symbolic dims bound to ``symbol_size``)."""
    from .ir import numpy_dtype
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else symbol_size for d in v.type.shape)
        dt = numpy_dtype(v.type.dtype)
        out.append(rng.standard_normal(shape).astype(dt) if dt.kind in "fc" else np.zeros(shape, dt))
    return tuple(out)


# --- formatting -------------------------------------------------------------------------
def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((2 ** 40, "Ti"), (2 ** 30, "Gi"), (2 ** 20, "Mi"), (2 ** 10, "Ki")) if unit == "B" \
            else ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def _delta(a: float, b: float) -> str:
    if a == b:
        return "="
    pct = f" ({100 * (b - a) / a:+.1f}%)" if a else ""
    return f"{b - a:+,}{pct}" if isinstance(a, int) else f"{b - a:+.3g}{pct}"


def stats_table(source, final) -> str:
    """Before/after table of nodes, params, param bytes, FLOPs and sparsity."""
    from .ir import graph_stats
    s, f = graph_stats(source), graph_stats(final)
    rows = [["nodes", f"{s.nodes:,}", f"{f.nodes:,}", _delta(s.nodes, f.nodes)],
            ["params", f"{s.params:,}", f"{f.params:,}", _delta(s.params, f.params)],
            ["param bytes", _human(s.param_bytes, "B"), _human(f.param_bytes, "B"),
             _delta(s.param_bytes, f.param_bytes)],
            ["FLOPs", _human(s.flops, "FLOPs"), _human(f.flops, "FLOPs"), _delta(s.flops, f.flops)],
            ["weight sparsity", f"{100 * s.sparsity:.1f}%", f"{100 * f.sparsity:.1f}%",
             f"{100 * (f.sparsity - s.sparsity):+.1f} pt" if f.sparsity != s.sparsity else "="]]
    return _table(["", "source", "compiled", "change"], rows, right=(1, 2, 3))


def history_table(history) -> str:
    rows = []
    for r in history:
        kinds = {}
        for m in r.remarks:
            kinds[m.kind] = kinds.get(m.kind, 0) + 1
        rows.append([str(r.index), r.name, f"{1e3 * r.seconds:.2f} ms", f"{r.before.nodes}",
                     f"{r.after.nodes}", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "-"])
    return _table(["#", "pass", "time", "nodes in", "out", "remarks"], rows, right=(0, 2, 3, 4))


# --- progress ---------------------------------------------------------------------------
PROGRESS_AFTER = 1.0
"""Seconds a step may take before a progress line (stderr) announces it; quick steps are silent."""


class Progress:
    """``with progress("pass dce (4/4)"):`` announces a step on stderr once it has run for
    PROGRESS_AFTER seconds, and then says how long it took."""

    def __init__(self, stream=None):
        self.stream = stream

    @contextlib.contextmanager
    def __call__(self, what: str):
        stream = self.stream or sys.stderr
        announced = threading.Event()

        def announce():
            announced.set()
            print(f"tensorsmith: {what} ...", file=stream, flush=True)

        timer = threading.Timer(PROGRESS_AFTER, announce)
        timer.daemon = True
        t0 = time.perf_counter()
        if PROGRESS_AFTER <= 0:
            announce()
        else:
            timer.start()
        try:
            yield
        finally:
            timer.cancel()
            if announced.is_set():
                print(f"tensorsmith: {what}: {time.perf_counter() - t0:.1f} s", file=stream,
                      flush=True)


# --- measuring --------------------------------------------------------------------------
def _block(x):
    import jax
    return jax.block_until_ready(x)


def median_latencies(fns: Sequence[Callable], args: tuple, repeats: int = 30) -> list[float]:
    """Median seconds per call of each function, calls interleaved so drift hits all alike.

    Each function must have run on ``args`` once already (compiled for exactly these arrays:
    a call with other array kinds, e.g. numpy vs device arrays, would compile again).
    """
    for fn in fns:  # warm up
        _block(fn(*args))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            _block(fn(*args))
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def baseline_fn(spec: ModelSpec, source, device) -> tuple[Callable, str]:
    """The uncompiled model as a jitted callable: the JAX function, else the source graph."""
    import jax
    if spec.is_jax:
        jitted = jax.jit(spec.model)
        if spec.params is None:
            return jitted, "jax.jit(fn)"
        params = jax.device_put(spec.params, device)
        return (lambda *a: jitted(params, *a)), "jax.jit(fn)"
    from .codegen import to_jax
    jitted = jax.jit(to_jax(source))
    params = tuple(jax.device_put(np.asarray(a), device) for a in source.params.values())
    return (lambda *a: jitted(params, *a)), "source IR"


def quality(ref_out, got_out, labels, what: str) -> tuple[list[str], dict]:
    """Lines comparing the compiled model's outputs with the source's, and the same as data."""
    import jax
    ref = [np.asarray(o) for o in jax.tree_util.tree_leaves(ref_out)]
    got = [np.asarray(o) for o in jax.tree_util.tree_leaves(got_out)]
    err = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
              for a, b in zip(ref, got))
    lines = []
    data = {"on": what, "max_abs_error": err}
    y = None if labels is None else np.asarray(labels)
    if y is not None and y.dtype.kind in "iu" and ref[0].ndim >= 1 and ref[0].shape[:-1] == y.shape:
        acc = [float(np.mean(np.argmax(o, -1) == y)) for o in (ref[0], got[0])]
        data["accuracy"] = {"source": acc[0], "compiled": acc[1]}
        lines.append(f"accuracy on {what}: source {100 * acc[0]:.2f}%  compiled {100 * acc[1]:.2f}%  "
                     f"({100 * (acc[1] - acc[0]):+.2f} pt)")
    lines.append(f"max |compiled - source| on {what}: {err:.3g}")
    return lines, data


def speed_words(t_base: float, t_cm: float) -> str:
    """``1.17x faster`` / ``1.05x slower`` / ``same speed``: the compiled model vs the baseline."""
    if t_cm <= 0 or t_base <= 0 or abs(t_base / t_cm - 1) < 0.005:
        return "same speed"
    return f"{t_base / t_cm:.2f}x faster" if t_cm < t_base else f"{t_cm / t_base:.2f}x slower"


# --- commands ---------------------------------------------------------------------------
def _import(spec: ModelSpec, args):
    from .api import import_model
    return import_model(spec.model, *spec.example_inputs, params=spec.params,
                        batch_dim=_batch_dim(args, spec), name=spec.name.replace("-", "_"),
                        dynamic_shapes=spec.dynamic_shapes)


def default_pipeline(model, target: str) -> str:
    """What `compile` runs when no pipeline is given: for an ONNX or PyTorch model on cpu,
    the pipeline that measured fastest against onnxruntime (benchmarks/fuse.py), with the
    XLA options measured on this host; otherwise the clean-ups."""
    from .api import _is_onnx, _is_torch
    if target == "cpu" and (_is_onnx(model) or _is_torch(model)):
        return "optimize,xla-options"
    return "default"


def cmd_compile(args) -> int:
    import jax
    from .codegen.target import needs_x64, x64_scope
    from . import compile as ts_compile
    from .passes import format_pipeline, parse_pipeline
    steps = parse_pipeline(args.passes or "default")  # refuse a bad pipeline before loading
    spec = resolve_model(args.model)
    if args.passes is None:
        args.passes = default_pipeline(spec.model, args.target)
        steps = parse_pipeline(args.passes)
    print_after = {s.name for s in steps} if args.print_ir_after_all else set(args.print_ir_after or ())
    from .ir.registry import did_you_mean
    for name in args.print_ir_after or ():
        if name not in {s.name for s in steps}:
            raise UsageError(f"--print-ir-after {name!r}: no such pass in the pipeline"
                             f"{did_you_mean(name, [s.name for s in steps])}; it runs "
                             f"{format_pipeline(steps) or 'nothing'}")
    options = {}
    for item in args.xla_option or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--xla-option {item!r}: expected KEY=VALUE "
                             "(e.g. xla_cpu_experimental_ynn_fusion_type=)")
        options[key.strip()] = value.strip()
    progress = Progress()
    calibration = _load_calibration(args.calibration, args.calibration_batch) \
        if args.calibration else None
    cm = ts_compile(spec.model, *spec.example_inputs, params=spec.params, target=args.target,
                    passes=steps, batch_dim=_batch_dim(args, spec), name=spec.name.replace("-", "_"),
                    dump_ir=args.dump_ir, progress=progress, calibration=calibration,
                    compiler_options=options,
                    dynamic_shapes=spec.dynamic_shapes,
                    warm_up=False)  # first called at the evaluation data's shape
    out = print
    out(f"model     {spec.name}  (@{cm.graph.name}, {len(cm.graph.inputs)} input(s): "
        f"{', '.join(str(v.type) for v in cm.graph.inputs)})")
    out(f"target    {args.target}{'' if cm.runnable else ' (export-only on this host)'}")
    out(f"pipeline  {format_pipeline(steps) or '(none)'}")
    if cm.compiler_options:
        out("xla       " + ", ".join(f"{k}={v!r}" for k, v in sorted(cm.compiler_options.items())))
    for rec in cm.history:  # after the header, so the output reads in order
        if rec.name in print_after:
            out("")
            out(f"// ----- IR after {rec.name} (step {rec.index}) -----")
            out(rec.ir_after.rstrip("\n"))
    out("")
    out(stats_table(cm.source, cm.graph))
    if cm.history:
        out("")
        out(history_table(cm.history))
    if any(rec.name == "quantize" and rec.data.get("quant_report") for rec in cm.history):
        from .passes.quant_debug import format_report, quant_report
        out("")
        out("quantization (SQNR of each quantized node vs float, worst first)")
        out(format_report(quant_report(cm)))
    if args.print_ir:
        out("")
        out(cm.ir())
    measured: dict = {}
    if cm.runnable:
        device = jax.devices(args.target)[0]
        if spec.eval_data is not None:
            x, y = spec.eval_data
            inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
            labels, what = y, f"{len(y)} held-out samples"
        elif spec.example_inputs:
            inputs, labels, what = spec.example_inputs, None, "the example inputs"
        else:
            inputs, labels, what = _synthetic_inputs(cm.graph), None, "random inputs"
        # One set of device arrays for every call below: each model then compiles once (numpy
        # and device arrays are different jit cache entries). 64-bit models (ONNX int64 ids)
        # need JAX's x64 mode for their arrays and the source IR's run, or both are truncated.
        wide = not spec.is_jax and (needs_x64(cm.source) if cm.source is not None else any(
            np.asarray(a).dtype in (np.int64, np.uint64, np.float64)
            for a in jax.tree_util.tree_leaves(inputs)))
        with x64_scope(wide):
            base, base_name = baseline_fn(spec, cm.source, device)
            on_device = jax.device_put(inputs, device)
            with progress(f"XLA compile and first call of the source model ({base_name})"):
                ref = _block(base(*on_device))
            with progress("XLA compile and first call of the compiled model"):
                got = _block(cm(*on_device))
        out("")
        lines, measured = quality(ref, got, labels, what)
        for line in lines:
            out(line)
        if args.repeats:
            with progress(f"latency: {args.repeats} interleaved runs of each model"), x64_scope(wide):
                t_base, t_cm = median_latencies([base, cm], on_device, args.repeats)
            batch = np.shape(jax.tree_util.tree_leaves(inputs)[0])[:1]
            measured["latency"] = {"baseline": base_name, "baseline_s": t_base, "compiled_s": t_cm,
                                   "repeats": args.repeats, "backend": jax.default_backend(),
                                   "batch": int(batch[0]) if batch else None}
            out(f"latency (batch {batch[0] if batch else '-'}, median of {args.repeats} interleaved "
                f"runs, {jax.default_backend()}): {base_name} {1e3 * t_base:.3f} ms  compiled "
                f"{1e3 * t_cm:.3f} ms  ({speed_words(t_base, t_cm)})")
        else:
            out("latency   not measured (--repeats 0)")
    else:
        out("")
        out(f"not run: this host has no {args.target} device; the artifact runs on one")
    out("")
    with progress("exporting"):
        artifact = cm.export(args.output or Path("out") / f"{spec.name}.tsx")
    out(f"artifact  {artifact}  ({_human(artifact.stat().st_size, 'B')}; "
        f"tensorsmith.load({str(artifact)!r}))")
    if args.dump_ir:
        last = f"{len(cm.history):02d}-{cm.history[-1].name}.tsir" if cm.history else "00-source.tsir"
        out(f"IR dumps  {args.dump_ir}/00-source.tsir .. {last} (+ .npz weights; tensorsmith.ir.load)")
    if args.report:
        from .report import write_report
        out(f"report    {write_report(cm, args.report, measured=measured)}")
    return 0


def cmd_inspect(args) -> int:
    from .ir import dtype_name, graph_stats
    spec = resolve_model(args.model)
    graph = _import(spec, args).graph
    s = graph_stats(graph)
    if not args.no_ir:
        print(graph.to_text())
        print()
    print(f"@{graph.name}: {s.nodes} nodes, {s.params} params ({s.param_elems:,} elements, "
          f"{_human(s.param_bytes, 'B')}, {100 * s.sparsity:.1f}% zero), {_human(s.flops, 'FLOPs')} "
          f"(symbolic dims counted as 1)")
    print()
    print(_table(["op", "count"], [[op, str(n)] for op, n in sorted(s.ops.items(), key=lambda t: -t[1])],
                 right=(1,)))
    if graph.params:
        print()
        rows = []
        for name, arr in graph.params.items():
            zeros = 0.0 if getattr(arr, "abstract", False) or not arr.size else \
                1 - np.count_nonzero(arr) / arr.size
            rows.append([f"@{name}", str(tuple(arr.shape)), dtype_name(arr.dtype), _human(arr.nbytes, "B"),
                         f"{100 * zeros:.1f}%"])
        print(_table(["param", "shape", "dtype", "bytes", "zero"], rows, right=(3, 4)))
    return 0


def cmd_passes(args) -> int:
    from .passes import PASSES, PIPELINES
    print(f"passes ({len(PASSES)}):")
    for name in sorted(PASSES):
        info = PASSES[name]
        print(f"  {name:<22} {info.doc}")
        for o in info.options:
            print(f"      {o.describe()}")
        patterns = getattr(sys.modules.get(info.fn.__module__), "PATTERNS", None)
        if patterns and any(o.name == "disable" for o in info.options):
            print(f"      patterns (names for disable=[...]): {', '.join(p.name for p in patterns)}")
        if info.needs:
            print(f"      needs: {', '.join(info.needs)} (compile(..., {info.needs[0]}=...))")
    print()
    print("pipelines (use a name anywhere a pass goes):")
    for name in sorted(PIPELINES):
        print(f"  {name:<22} {PIPELINES[name] or '(no passes: the model as imported)'}")
    print()
    print("syntax: pass{option=value,list=[a,b],...},pass,...   e.g. --passes 'default,dce'")
    return 0


def _load_calibration(path: str, batch: int) -> list[tuple]:
    """Calibration batches from an .npz (x, or input_0, input_1, ...), split along axis 0."""
    if not Path(path).is_file():
        raise UsageError(f"--calibration {path!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        raise UsageError(f"--calibration {path!r}: not an .npz of plain arrays (object arrays "
                         "are refused)") from None
    if "x" in arrays:
        inputs = [arrays["x"]]
    else:
        inputs = []
        while f"input_{len(inputs)}" in arrays:
            inputs.append(arrays[f"input_{len(inputs)}"])
    if not inputs:
        raise UsageError(f"--calibration {path!r}: needs x or input_0, input_1, ...; has "
                         f"{', '.join(sorted(arrays)) or 'no arrays'}")
    n = len(inputs[0])
    if any(len(a) != n for a in inputs):
        raise UsageError(f"--calibration {path!r}: the inputs have different numbers of samples "
                         f"({', '.join(str(len(a)) for a in inputs)})")
    return [tuple(a[i:i + batch] for a in inputs) for i in range(0, n, batch)]


def _load_data(path: str, n_inputs: int) -> tuple[list, np.ndarray | None]:
    if not Path(path).is_file():
        raise UsageError(f"--data {path!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        raise UsageError(f"--data {path!r}: not an .npz of plain arrays (object arrays are refused)") \
            from None
    if "x" in arrays and n_inputs == 1:
        inputs = [arrays["x"]]
    else:
        keys = [f"input_{i}" for i in range(n_inputs)]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise UsageError(f"--data {path!r}: needs {'x or ' if n_inputs == 1 else ''}"
                             f"{', '.join(keys)}; has {', '.join(sorted(arrays)) or 'no arrays'}")
        inputs = [arrays[k] for k in keys]
    return inputs, arrays.get("y")


def cmd_bisect(args) -> int:
    from .bisection import bisect
    from .passes import parse_pipeline
    steps = parse_pipeline(args.passes)
    spec = resolve_model(args.model)
    graph = None if spec.example_inputs else _import(spec, args)[0]
    n_inputs = len(spec.example_inputs) if graph is None else len(graph.inputs)
    if args.data:
        inputs, labels = _load_data(args.data, n_inputs)
    elif spec.eval_data is not None:
        x, labels = spec.eval_data
        inputs = list(x) if isinstance(x, (tuple, list)) else [x]
    elif spec.example_inputs:
        inputs, labels = None, None
    else:  # an ONNX/IR file: random inputs still show which pass changes the function
        inputs, labels = list(_synthetic_inputs(graph, symbol_size=8)), None
        print("(no data given: random inputs, symbolic dims = 8; pass --data for real ones)")
    calibration = _load_calibration(args.calibration, args.calibration_batch) \
        if args.calibration else None
    if calibration is None and any(s.name in ("quantize", "bias-correction", "gptq",
                                              "smooth-quant", "equalize") for s in steps):
        if inputs is None:
            raise UsageError("bisect: the pipeline calibrates (quantize); give --calibration NPZ "
                             "or --data NPZ")
        n = len(inputs[0])
        b = args.calibration_batch
        calibration = [tuple(a[i:i + b] for a in inputs) for i in range(0, n, b)]
        print("(no --calibration: the pipeline calibrates on the bisect data)")
    result = bisect(spec.model, *spec.example_inputs, params=spec.params, passes=steps, data=inputs,
                    labels=labels, top=args.top, batch_dim=_batch_dim(args, spec),
                    calibration=calibration, sqnr_threshold=args.sqnr_threshold)
    print(result)
    if args.json:
        from .ir.serialize import atomic_write
        atomic_write(args.json, json.dumps(result.as_dict(), indent=2).encode())
        print(f"\nwrote {args.json}")
    return 0


# --- argument parsing -------------------------------------------------------------------
def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _calibration_options(c: argparse.ArgumentParser, help_: str) -> None:
    """--calibration NPZ and --calibration-batch B, as compile and bisect take them."""
    c.add_argument("--calibration", metavar="NPZ", help=help_)
    c.add_argument("--calibration-batch", type=_positive, default=32, metavar="B",
                   help="samples per calibration batch (default: 32)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="tensorsmith", formatter_class=fmt,
                description="A compiler-style graph optimizer for ML models, lowered through JAX/XLA.",
                epilog="Run `tensorsmith compile` with no arguments to optimize the bundled digits CNN.")
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def model_cmd(name, help_, **kw):
        c = sub.add_parser(name, help=help_, description=help_, epilog=MODEL_HELP, formatter_class=fmt)
        c.add_argument("model", nargs="?" if kw.get("optional") else None, metavar="MODEL",
                       help="bundled example, .onnx/.tsir file, or package.module:attr"
                            + (" (default: digits-cnn)" if kw.get("optional") else ""))
        c.add_argument("--batch-dim", default="N", metavar="SYM",
                       help="symbol for the leading input dim of a JAX model, so any batch size runs "
                            "(default: N; 'none' keeps the example shapes)")
        c.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
        return c

    c = model_cmd("compile", "trace/import a model, run a pass pipeline, compile and export it",
                  optional=True)
    c.add_argument("--target", default="cpu", choices=("cpu", "gpu", "tpu"),
                   help="where the compiled model runs (default: cpu)")
    c.add_argument("--passes", default=None, metavar="P",
                   help="pipeline, e.g. 'canonicalize,dce' (default: 'optimize,xla-options' for "
                        "an ONNX or PyTorch model on cpu, else 'default'; see `tensorsmith passes`)")
    c.add_argument("-o", "--output", metavar="OUT", help="artifact path (default: out/<model>.tsx)")
    c.add_argument("--xla-option", action="append", metavar="KEY=VALUE",
                   help="an XLA compiler option for the executables (repeatable; over the "
                        "pipeline's xla-options pass)")
    c.add_argument("--print-ir", action="store_true", help="print the final IR")
    c.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    c.add_argument("--print-ir-after", nargs="+", metavar="PASS", help="print the IR after these passes")
    c.add_argument("--dump-ir", metavar="DIR",
                   help="write 00-source.tsir, 01-<pass>.tsir, ... (+ weights) into DIR")
    c.add_argument("--report", metavar="HTML", help="write a self-contained HTML report")
    _calibration_options(c, ".npz of calibration inputs (x, or input_0, input_1, ...) for "
                            "passes that run the model (quantize)")
    c.add_argument("--repeats", type=_count, default=30, metavar="R",
                   help="timed runs per model for the latency comparison (default: 30; 0 skips "
                        "the latency measurement)")
    c.set_defaults(run=cmd_compile)

    c = model_cmd("inspect", "print a model's IR, op counts, params, bytes and FLOPs")
    c.add_argument("--no-ir", action="store_true", help="only the summary tables")
    c.set_defaults(run=cmd_inspect)

    c = sub.add_parser("passes", help="list registered passes, their options and named pipelines",
                       description="List registered passes, their options and named pipelines.")
    c.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    c.set_defaults(run=cmd_passes)

    c = model_cmd("bisect", "find the pass (and node) that makes outputs drift from the source model")
    c.add_argument("--passes", default="default", metavar="P", help="pipeline to bisect (default: default)")
    c.add_argument("--data", metavar="D",
                   help=".npz with inputs (x, or input_0, input_1, ...) and optional labels y "
                        "(default: the model's eval_data, else its example inputs)")
    c.add_argument("--top", type=_positive, default=10, help="how many diverging values to list (default: 10)")
    _calibration_options(c, ".npz of calibration inputs for a pipeline that quantizes "
                            "(default: the bisect data)")
    c.add_argument("--sqnr-threshold", type=float, default=20.0, metavar="DB",
                   help="quantization debugger: name the first quantized node whose SQNR vs "
                        "float is below DB (default: 20)")
    c.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    c.set_defaults(run=cmd_bisect)
    return p


def _user_errors() -> tuple[type, ...]:
    # every tensorsmith error names what the user gave; its message stands on its own
    from .errors import TensorsmithError
    return (TensorsmithError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tensorsmith` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    global _USER_ERRORS
    _USER_ERRORS = _user_errors()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.run(args)
    except KeyboardInterrupt:
        print("tensorsmith: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # one clear line, not a traceback (unless asked for)
        if "--traceback" in argv:
            raise
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        msg = text if isinstance(e, _USER_ERRORS) else f"{type(e).__name__}: {text}"
        msg = " ".join(msg.split())  # one line
        print(msg if msg.startswith("tensorsmith") else f"tensorsmith: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
