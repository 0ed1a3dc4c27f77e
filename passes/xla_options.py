"""xla-options: XLA compiler options for every executable of the compiled model.

The options live in the pipeline's result (``ctx.compiler_options``, recorded in each
PassRecord and read by the compiled model), not in the IR: they change how XLA compiles the
program, not what it computes. ``ynn=auto`` measures instead of guessing, because XLA:CPU's
YNNPACK fusion is slower on most convolution programs yet faster on some dense ones (issue 16).
Other XLA:CPU options measured on small dense programs (the 256x32->64->64->8 MLP) did no
better than XLA's defaults and are not searched: multi-threaded Eigen off, XNNPACK off or
as the dot library, YNNPACK dot+eltwise fusion, the concurrency-optimized scheduler (all
within 1% or 5-15% slower); fusion emitters off doubled the time. What did matter there is
how JAX dispatches the executable (codegen/executor.py: setup_cpu_dispatch), recorded in
this pass's data.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..codegen.executor import setup_cpu_dispatch
from ..errors import UsageFailure
from ..ir import Graph
from ..ir.types import is_float, numpy_dtype
from .context import PassContext
from .manager import PassError
from .registry import Option, PassOptionError, register_pass

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_CHOICES = {"on": None, "off": "", "dot": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
"""ynn choice -> value of the XLA option (None: unset, XLA's default fuses dots, convolutions
and reductions into YNNPACK calls; "": no YNNPACK fusion; dot: only dots)."""

ROUND_S = 0.05  # each candidate runs about this long per round (at least one call)
DROP_AFTER = 2.0  # a candidate this many times slower than the best is no longer timed


class XlaOptionsError(PassError, UsageFailure):
    """A compiler option given to pass 'xla-options' that XLA refuses."""


def parse_assignments(items, where: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: VALUE}``; a PassOptionError for an item without '='."""
    out = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise PassOptionError(f"{where}: {item!r} is not KEY=VALUE "
                                  f"(e.g. {YNN_OPTION}=)")
        out[key.strip()] = value.strip()
    return out


def _check_set(items) -> None:
    parse_assignments(items, "pass 'xla-options' option 'set'")


def _with_ynn(options: dict, choice: str) -> dict:
    out = dict(options)
    out.pop(YNN_OPTION, None)
    if YNN_CHOICES[choice] is not None:
        out[YNN_OPTION] = YNN_CHOICES[choice]
    return out


@register_pass("xla-options", options=(
    Option("ynn", str, "auto", "XLA:CPU's YNNPACK fusion: on (XLA's default), off, dot (dots "
           "only), or auto: measure each on this host and keep the fastest",
           choices=("auto", *YNN_CHOICES)),
    Option("set", list, (), "other XLA compiler options as KEY=VALUE", check=_check_set),
    Option("rounds", int, 5, "auto: interleaved timing rounds", range=(1, 1000)),
    Option("margin", float, 0.02, "auto: another choice must beat XLA's default by this "
           "fraction", range=(0.0, 1.0)),
))
def xla_options(graph: Graph, ctx: PassContext, ynn: str, set: tuple, rounds: int,
                margin: float) -> Graph:
    """Choose the XLA compiler options of the model's executables (ynn=auto: measured here)."""
    options = dict(ctx.compiler_options)
    given = parse_assignments(set, "pass 'xla-options' option 'set'")
    options.update(given)
    if YNN_OPTION in given:
        ctx.remark("note", f"set={YNN_OPTION}={given[YNN_OPTION]!r} decides YNNPACK fusion; "
                   f"ynn={ynn} is not applied")
    elif ctx.target != "cpu":
        ctx.remark("note", f"ynn={ynn}: YNNPACK fusion is an XLA:CPU choice; target "
                   f"{ctx.target!r} keeps XLA's defaults")
    elif ynn != "auto":
        options = _with_ynn(options, ynn)
        ctx.remark("applied", f"ynn={ynn}", option=YNN_OPTION, value=YNN_CHOICES[ynn])
    else:
        options = _measure_ynn(graph, ctx, options, rounds, margin)
    ctx.compiler_options.clear()
    ctx.compiler_options.update(options)
    if ctx.target == "cpu":  # not a compiler option, but as decisive for small programs
        mode, why = setup_cpu_dispatch()
        ctx.pass_data["cpu_dispatch"] = {"mode": mode, "why": why}
    return graph


def _measure_ynn(graph: Graph, ctx: PassContext, options: dict, rounds: int,
                 margin: float) -> dict:
    """``options`` with the YNNPACK choice that ran fastest on this host."""
    inputs, what = _inputs_for(graph, ctx)
    if inputs is None:
        ctx.remark("missed", f"ynn=auto cannot measure: {what}; XLA's default (on) is kept")
        return options
    if ctx.executor is None:
        ctx.remark("missed", "ynn=auto cannot measure: no executor; XLA's default (on) is kept")
        return options
    runs, compile_s = {}, {}
    for choice in YNN_CHOICES:
        t0 = time.perf_counter()
        try:
            run = ctx.executor(graph, jit=True, compiler_options=_with_ynn(options, choice))
            run(*inputs)  # the first call compiles
        except UsageFailure as e:  # an option from 'set' that XLA refuses
            raise XlaOptionsError(f"pass 'xla-options' option 'set': {e}") from e
        compile_s[choice] = time.perf_counter() - t0
        runs[choice] = run
    per_call = _interleaved(runs, inputs, rounds)
    best = min(per_call, key=per_call.get)
    if best != "on" and per_call[best] > per_call["on"] * (1 - margin):
        best = "on"  # within noise of the default: keep the default
    figures = ", ".join(f"{c} {1e3 * t:.3g} ms" for c, t in per_call.items())
    ctx.remark("applied" if best != "on" else "note",
               f"ynn=auto chose {best}: {figures} per call (median call of {rounds} interleaved "
               f"rounds on {what}; compile {', '.join(f'{c} {s:.2g} s' for c, s in compile_s.items())})",
               choice=best, **{f"{c}_ms": 1e3 * t for c, t in per_call.items()})
    return _with_ynn(options, best)


def _interleaved(runs: dict, inputs: list, rounds: int) -> dict[str, float]:
    """Median seconds per call of each runner, in rounds that rotate their order.

    Each call is timed on its own: on a busy host a preempted call is one outlier, where it
    would shift a whole round's mean (the MLP's 13% slower YNNPACK-off choice won some runs
    at load 10 when rounds were averaged). A runner more than DROP_AFTER times slower than
    the best after a round cannot win; it stops being timed (an 11 s YNNPACK fusion need not
    run five more times)."""
    calls = {}
    for choice, run in runs.items():  # size a round: at least one call, about ROUND_S long
        t0 = time.perf_counter()
        run(*inputs)
        calls[choice] = max(1, int(ROUND_S / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {c: [] for c in runs}
    order = list(runs)
    clock = time.perf_counter
    for r in range(rounds):
        k = r % len(order)
        for choice in order[k:] + order[:k]:
            run, n, ts = runs[choice], calls[choice], times[choice]
            for _ in range(n):
                t0 = clock()
                run(*inputs)
                ts.append(clock() - t0)
        best = min(statistics.median(ts) for ts in times.values())
        order = [c for c in order if min(times[c]) <= DROP_AFTER * best]
    return {c: statistics.median(ts) for c, ts in times.items()}


def _inputs_for(graph: Graph, ctx: PassContext) -> tuple[list | None, str]:
    """Inputs to time ``graph`` on, and what they are (or None and why there are none)."""
    example = ctx.data.get("example_inputs")
    calibration = ctx.calibration[0] if ctx.calibration else None
    for source, what in ((example, "the example inputs"), (calibration, "the first calibration batch")):
        if source is not None and _fits(graph, source):
            return [np.asarray(x) for x in source], what + " " + _shapes(source)
    if all(v.type.is_static for v in graph.inputs):
        rng = np.random.default_rng(0)
        arrays = [_random(v.type, rng) for v in graph.inputs]
        return arrays, "random inputs " + _shapes(arrays)
    symbolic = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs if not v.type.is_static)
    return None, (f"inputs {symbolic} have symbolic dims and no example inputs fit; pass example "
                  "inputs to compile()")


def _fits(graph: Graph, arrays) -> bool:
    if len(arrays) != len(graph.inputs):
        return False
    for v, a in zip(graph.inputs, arrays):
        shape = np.shape(a)
        if len(shape) != len(v.type.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(v.type.shape, shape)):
            return False
    return True


def _random(t, rng) -> np.ndarray:
    dt = numpy_dtype(t.dtype)
    shape = tuple(t.shape)
    if is_float(t.dtype):
        return rng.standard_normal(shape).astype(dt)
    return np.zeros(shape, dt)  # index-like inputs: zeros are in range for any table


def _shapes(arrays) -> str:
    return "(" + ", ".join("x".join(map(str, np.shape(a))) or "scalar" for a in arrays) + ")"
