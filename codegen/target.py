"""Targets: jit on a backend present on this host, or lower with jax.export for one that is not."""
from __future__ import annotations

import contextlib
from functools import lru_cache

import jax

from ..ir import Graph, numpy_dtype
from ..ir.types import dim_symbols
from ..errors import UsageFailure

TARGETS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
"""Target name -> the platform name jax.export records."""


class TargetError(UsageFailure, ValueError):
    """An unknown target, or a request that the target cannot serve on this host."""


def check_target(target: str) -> str:
    if target not in TARGETS:
        from ..ir.registry import did_you_mean
        # A platform name (cuda, rocm) is not a target, but the user meant the target for it.
        platform_of = {"cuda": "gpu", "rocm": "gpu", "host": "cpu"}
        key = str(target).lower()
        hint = (f" (did you mean {platform_of.get(key, key)!r}?)" if key in platform_of or key in TARGETS
                else did_you_mean(key, TARGETS))
        raise TargetError(f"unknown target {target!r}{hint}; choose one of {', '.join(TARGETS)}")
    return target


@lru_cache(maxsize=None)
def host_has(target: str) -> bool:
    """Whether this host has devices for ``target`` (so it can run, not only export)."""
    try:
        return len(jax.devices(target)) > 0
    except RuntimeError:
        return False


def input_specs(graph: Graph) -> list[jax.ShapeDtypeStruct]:
    """Abstract inputs for lowering; symbolic dims become jax.export symbols in one scope."""
    from ..ir.types import eval_dim
    symbols = sorted({s for v in graph.inputs for d in v.type.shape for s in dim_symbols(d)})
    env = {}
    if symbols:
        dims = jax.export.symbolic_shape(",".join(symbols),
                                         constraints=export_constraints(graph, symbols))
        env = dict(zip(symbols, dims))
    return [jax.ShapeDtypeStruct(tuple(eval_dim(d, env) for d in v.type.shape),
                                 numpy_dtype(v.type.dtype)) for v in graph.inputs]


def export_constraints(graph: Graph, symbols) -> list[str]:
    """The graph's requirements as jax.export constraint text (``"512 - sequence >= 0"``).

    Only requirements over the inputs' symbols are kept; each is spelled by jax itself (its
    text for the expression built from scratch symbols), so jax parses it back.
    """
    from ..ir.types import eval_dim
    reqs = [r for r in graph.requires if r.symbols and r.symbols <= set(symbols)]
    if not reqs:
        return []
    scratch = dict(zip(symbols, jax.export.symbolic_shape(",".join(symbols))))
    out = []
    for r in reqs:
        e = eval_dim(r.expr, scratch)
        out.append(f"{e} >= 0")
    return out


def param_specs(graph: Graph) -> tuple:
    return tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in graph.params.values())


WIDE_DTYPES = frozenset({"f64", "i64", "u64", "c128"})


def needs_x64(graph: Graph) -> bool:
    """Whether the graph computes in 64-bit types (JAX truncates them unless x64 is on)."""
    types = [v.type for v in graph.inputs] + [graph.param(k).type for k in graph.params]
    types += [o.type for n in graph.walk() for o in n.outputs]
    return any(t.dtype in WIDE_DTYPES for t in types)


def x64_scope(enabled: bool):
    """A context in which JAX keeps 64-bit types (a no-op when not ``enabled``)."""
    return jax.enable_x64(True) if enabled else contextlib.nullcontext()


# --- XLA compiler options ----------------------------------------------------------------
class CompilerOptionError(UsageFailure, ValueError):
    """An XLA compiler option that XLA refuses: an unknown name or a value of the wrong kind."""


def known_compiler_options() -> list[str]:
    """Names of XLA's debug options that this jaxlib reports (for 'did you mean')."""
    from jax._src.lib import _jax  # private: the names are only used for suggestions
    names = {n for n in dir(_jax.DebugOptions) if n.startswith("xla_")}
    # Keep each level referenced: the nested objects do not own their parents.
    compile_options = _jax.CompileOptions()
    build_options = compile_options.executable_build_options
    debug_options = build_options.debug_options
    text = str(debug_options)
    names.update(line.split(":", 1)[0].strip() for line in text.splitlines()
                 if line.strip().startswith("xla_") and ":" in line)
    return sorted(names)


@lru_cache(maxsize=64)
def _probe(items: tuple, platform: str) -> str:
    """XLA's complaint about these options when compiling a tiny program ('' when none)."""
    import numpy as np
    x = jax.device_put(np.float32(0), jax.devices(platform)[0])
    lowered = jax.jit(lambda x: x + 1).lower(x)
    try:
        lowered.compile(compiler_options=dict(items))
    except Exception as e:  # noqa: BLE001 - XLA reports option errors as runtime errors
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return ""


def check_compiler_options(options: dict, target: str = "cpu", where: str = "") -> dict:
    """``options`` as XLA takes them, or a CompilerOptionError naming the bad one and the closest
    valid name. Checked by compiling a tiny program on ``target`` (skipped when the host has no
    such device: the options only apply to executables compiled here)."""
    if not options:
        return {}
    for k, v in options.items():
        if not isinstance(k, str) or not isinstance(v, (str, bool, int, float)):
            raise CompilerOptionError(f"XLA compiler option {k!r}{where}: names are strings and "
                                      f"values str/bool/int/float, got {type(v).__name__}")
    if not host_has(target):
        return dict(options)
    for k, v in options.items():  # one at a time, so the message names the option at fault
        why = _probe(((k, v),), target)
        if not why:
            continue
        if "No such compile option" in why:
            from ..ir.registry import did_you_mean
            raise CompilerOptionError(f"unknown XLA compiler option {k!r}{where}"
                                      f"{did_you_mean(k, known_compiler_options())}")
        raise CompilerOptionError(f"XLA compiler option {k}={v!r}{where}: {why}")
    return dict(options)
