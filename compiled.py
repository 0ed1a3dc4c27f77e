"""CompiledModel: the result of compile(): callable at any shape, inspectable, exportable.

A compiled model keeps a bounded LRU of XLA executables, one per call signature (input
shapes and dtypes, plus the bytes of the inputs whose values decide shapes). Cheapest tier
first: the symbolic graph, imported and optimized once, is compiled for each new signature;
a model whose import needs concrete shapes or input values is re-imported for the call (a
*specialization*: import and pass pipeline again), and that graph is compiled.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from . import codegen
from .codegen.compile_cache import setup_compile_cache
from .codegen.target import (TARGETS, TargetError, host_has, input_specs, needs_x64, param_specs,
                             x64_scope)
from .ir import Graph, TensorType, numpy_dtype
from .ir.serialize import atomic_write, pack_arrays
from .callcheck import ArgChecker
from .errors import CallError, ExportError, LoweringFailure, UsageFailure
from .exported import EXPORT_FORMAT, ExportOnlyError, LoadedModel, load_export

DEFAULT_CACHE_SIZE = 32
DEFAULT_RECOMPILE_WARNING = 8


class SpecializationError(CallError, ValueError):
    """A graph specialized to an input's value was called with another value (raw guarded
    graphs only; a CompiledModel specializes again instead)."""


class NotSpecializedError(UsageFailure, RuntimeError):
    """The model has no graph yet: its import needs the shapes or values of a call."""


class CompileFailure(LoweringFailure, RuntimeError):
    """XLA (or JAX tracing) failed to compile the model for a call signature."""


class RecompileWarning(UserWarning):
    """A compiled model keeps compiling for new input signatures."""


class Specialized(NamedTuple):
    """What a specializer returns: the graphs of one re-import and the inputs it bound."""

    graph: Graph
    source: Graph
    history: Any
    bound: dict          # input name -> the value the import used (shape-deciding inputs)
    out_tree: Any


# --- the cache --------------------------------------------------------------------------------
@dataclass(eq=False)
class _Entry:
    """One executable: the graph it came from, shared device params, casts to apply."""

    exe: Callable
    key: tuple
    graph: Graph
    params: tuple
    x64: bool
    casts: tuple
    signature: str
    specialized: bool
    compile_s: float
    import_s: float = 0.0
    fast: Callable | None = None
    compiler_options: dict = field(default_factory=dict)  # the XLA options it was compiled with

    def __call__(self, leaves):
        if self.casts:
            leaves = list(leaves)
            for i, dt in self.casts:
                leaves[i] = leaves[i].astype(dt)
        if self.x64:
            with jax.enable_x64(True):
                return self.exe(self.params, *leaves)
        return self.exe(self.params, *leaves)


@dataclass
class CacheInfo:
    """What the executable cache did: counts, its size and bound, and the cached signatures."""

    hits: int = 0
    misses: int = 0
    compiles: int = 0
    specializations: int = 0   # re-imports for a call's shapes / values
    pipeline_runs: int = 0     # the symbolic graph's run plus one per specialization
    evictions: int = 0
    size: int = 0
    maxsize: int = DEFAULT_CACHE_SIZE
    signatures: list = field(default_factory=list)
    compile_seconds: float = 0.0
    specialize_seconds: float = 0.0


def _flat_structured(fn, out_tree):
    """A graph function taking flat leaves and returning the user's output pytree."""
    def wrapped(params, *leaves):
        return jax.tree_util.tree_unflatten(out_tree, fn(params, *leaves))
    return wrapped


class CompiledModel:
    """A model after import, passes and codegen for one target; specializes per call signature."""

    def __init__(self, graph: Graph | None, source: Graph | None, *, target: str, in_tree,
                 out_tree, history=(), pipeline: str = "", example_args: tuple = (),
                 specialized: dict | None = None, specializer: Callable | None = None,
                 inputs: list[tuple[str, TensorType]] | None = None, deferred: str = "",
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 recompile_warning: int | None = DEFAULT_RECOMPILE_WARNING,
                 cast_inputs: bool = False, jax_dtypes: bool = False, name: str = "",
                 compiler_options: dict | None = None):
        if graph is None and specializer is None:
            raise ValueError("CompiledModel needs a graph or a specializer")
        if not isinstance(cache_size, int) or cache_size < 1:
            raise UsageFailure(f"compile(cache_size=...) must be a positive int, got {cache_size!r}")
        self._base, self._base_source, self._base_history = graph, source, history
        self.target, self.pipeline = target, pipeline
        self._in_tree, self._out_tree = in_tree, out_tree
        self._example = example_args
        self._specializer, self._deferred = specializer, deferred
        self._maxsize, self._warn_after = cache_size, recompile_warning
        self._user_options = dict(compiler_options or {})  # over what the pipeline chose
        decl = [(v.name, v.type) for v in graph.inputs] if graph is not None else list(inputs or [])
        gname = graph.name if graph is not None else (name or "model")
        self._label = f"model @{gname}"
        self._checker = ArgChecker(decl, self._label, cast_inputs, jax_dtypes,
                                   graph.requires if graph is not None else ())
        n = len(decl)
        self._flat = in_tree == jax.tree_util.tree_structure(tuple([0] * n))
        self._cache: OrderedDict = OrderedDict()
        self._fast: dict = {}                  # tuple of JAX avals -> entry (checked types only)
        self._fast_np: dict = {}               # tuple of numpy (shape, dtype) -> entry (likewise)
        self._last: _Entry | None = None       # the most recently used entry (end of the LRU)
        self._info = CacheInfo(maxsize=cache_size, pipeline_runs=1 if graph is not None else 0)
        self._value_pos: tuple[int, ...] = ()
        self._seen: list[tuple] = []           # (shapes, value bytes) per compile, for the warning
        self._warned = False
        self._rep: Specialized | None = None   # the first specialization (graph when no base)
        self._rep_bound = dict(specialized or {})
        self._pool: dict[str, tuple] = {}      # param name -> (host array, device array)
        self.runnable = host_has(target)
        self._exported = None
        if self.runnable:
            self._device = jax.devices(target)[0]
        elif graph is not None:  # lower now, so a target without hardware here still fails early
            with x64_scope(needs_x64(graph)):
                self._exported = self._export(graph, self._in_tree, self._out_tree)

    # --- running -----------------------------------------------------------------------
    def __call__(self, *args):
        if not self.runnable:
            raise ExportOnlyError(
                f"this model was compiled for target={self.target!r}, which this host does not "
                f"have (devices: {', '.join(sorted({d.platform for d in jax.devices()}))}); it is "
                f"export-only. Call .export(path) and run it on a {self.target} host with "
                f"tensorsmith.load(path)(*args), or compile with target='cpu' to run here.")
        if self._flat:
            leaves = args
            if args and type(args[0]) is np.ndarray:  # hot path: numpy arrays whose (shape,
                # dtype) passed the checks before (tested first: no exception from .aval); any
                # other argument type puts a None in the key, which matches no entry
                entry = self._fast_np.get(tuple([(a.shape, a.dtype) if type(a) is np.ndarray
                                                 else None for a in args]))
            else:
                try:  # hot path: JAX arrays whose exact types passed the checks before
                    entry = self._fast.get(tuple([a.aval for a in args]))
                except AttributeError:
                    entry = None
            if entry is not None:
                self._info.hits += 1
                if entry is not self._last:
                    self._touch(entry)
                return entry.fast(*args)
        else:
            leaves, tree = jax.tree_util.tree_flatten(args)
            if tree != self._in_tree:
                raise CallError(f"{self._label} takes arguments structured as {self._in_tree}; "
                                f"got {tree}")
        try:
            key = tuple([(a.shape, a.dtype) for a in leaves])
        except AttributeError:  # Python scalars or lists: arrays first
            leaves = self._checker.coerce(leaves)
            key = tuple([(a.shape, a.dtype) for a in leaves])
        if self._value_pos:
            key += self._value_key(leaves)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._miss(key, leaves)
        else:
            self._info.hits += 1
            if entry is not self._last:
                self._touch(entry)
        if self._flat and not entry.casts and not entry.x64 and not self._value_pos:
            try:
                avals = tuple([a.aval for a in leaves])
            except AttributeError:
                avals = None
            if avals is None and not all([type(a) is np.ndarray for a in leaves]):
                return entry(leaves)  # lists, scalars, other array types: checked every call
            out = entry(leaves)
            if entry.fast is None:
                # The executable's C++ entry point (made by its first call), params bound; it
                # takes numpy arrays too (copied to the device in C++, no Python device_put).
                entry.fast = partial(getattr(entry.exe, "_call", None) or entry.exe, entry.params)
            if avals is None:
                self._fast_np[key] = entry
            else:
                self._fast[avals] = entry
            return out
        return entry(leaves)

    def _touch(self, entry: _Entry) -> None:
        self._cache.move_to_end(entry.key)
        self._last = entry

    def _value_key(self, leaves) -> tuple:
        if len(leaves) <= max(self._value_pos):
            return ()
        return tuple(np.asarray(leaves[i]).tobytes() for i in self._value_pos)

    def warm_up(self, *args) -> None:
        """Compile (or specialize) for these arguments' signature without running the model."""
        leaves = self._checker.coerce(jax.tree_util.tree_leaves(args))
        key = tuple((a.shape, a.dtype) for a in leaves)
        if self._value_pos:
            key += self._value_key(leaves)
        if key not in self._cache:
            self._miss(key, leaves)

    def _miss(self, key, leaves) -> _Entry:
        self._info.misses += 1
        casts = self._checker.check(leaves)
        if self._base is not None:
            try:
                entry = self._compile(self._base, self._out_tree, leaves, casts, False,
                                      self._base_history)
            except CallError:
                raise
            except Exception:
                if self._specializer is None:
                    raise
                entry = None  # the symbolic graph cannot take this signature: specialize
            if entry is not None:
                return self._insert(key, entry, leaves)
        t0 = time.perf_counter()
        spec = self._specialize(leaves)
        import_s = time.perf_counter() - t0
        names = self._checker.names
        pos = tuple(sorted(set(self._value_pos) | {names.index(k) for k in spec.bound if k in names}))
        if pos != self._value_pos:
            # New shape-deciding inputs: keys made without their bytes would be ambiguous.
            self.cache_clear()
            self._value_pos = pos
            key = tuple((a.shape, a.dtype) for a in leaves) + self._value_key(leaves)
        entry = self._compile(spec.graph, spec.out_tree, leaves, casts, True, spec.history)
        entry.import_s = import_s
        if self._rep is None:
            self._rep, self._rep_bound = spec, dict(spec.bound)
        return self._insert(key, entry, leaves)

    def _specialize(self, leaves) -> Specialized:
        if self._specializer is None:
            raise CompileFailure(f"{self._label} cannot be specialized")
        names = self._checker.names
        shapes = {k: tuple(a.shape) for k, a in zip(names, leaves)}
        values = {k: np.asarray(a) for k, a in zip(names, leaves)}
        self._info.specializations += 1
        self._info.pipeline_runs += 1
        t0 = time.perf_counter()
        try:
            return self._specializer(shapes, values)
        finally:
            self._info.specialize_seconds += time.perf_counter() - t0

    def _options(self, history) -> dict:
        """XLA compiler options for executables of a graph made by the pipeline run ``history``."""
        chosen = getattr(history, "compiler_options", None) or {}
        return {**chosen, **self._user_options}

    @property
    def compiler_options(self) -> dict:
        """The XLA compiler options of this model's executables (pipeline's, then compile()'s)."""
        if self._base is None and self._rep is None:
            return dict(self._user_options)
        return self._options(self.history)

    def _compile(self, graph: Graph, out_tree, leaves, casts, specialized: bool,
                 history=None) -> _Entry:
        setup_compile_cache()
        options = self._options(history)
        cast_to = dict(casts)
        specs = [jax.ShapeDtypeStruct(tuple(a.shape), cast_to.get(i, np.dtype(a.dtype)))
                 for i, a in enumerate(leaves)]
        x64 = needs_x64(graph)
        fn = _flat_structured(codegen.to_jax(graph), out_tree)
        t0 = time.perf_counter()
        with x64_scope(x64):
            params = self._device_params(graph)
            try:
                exe = jax.jit(fn).lower(params, *specs).compile(compiler_options=options or None)
            except Exception as e:
                from .errors import TensorsmithError
                if isinstance(e, TensorsmithError):
                    raise
                raise CompileFailure(f"compiling {self._label} for {self._sig_text(leaves)} "
                                     f"failed: {type(e).__name__}: {e}") from e
        dt = time.perf_counter() - t0
        self._info.compiles += 1
        self._info.compile_seconds += dt
        return _Entry(exe, None, graph, params, x64, casts, self._sig_text(leaves), specialized, dt,
                      compiler_options=options)

    def _device_params(self, graph: Graph) -> tuple:
        """Device copies of ``graph``'s params, shared with earlier entries when equal."""
        out = []
        # Inside x64 so int64/f64 weights keep their type on the device.
        with jax.enable_x64(True):
            for name, arr in graph.params.items():
                hit = self._pool.get(name)
                if hit is not None and (hit[0] is arr or (
                        hit[0].shape == arr.shape and hit[0].dtype == arr.dtype
                        and np.array_equal(hit[0], arr))):
                    out.append(hit[1])
                    continue
                dev = jax.device_put(np.asarray(arr), self._device)
                if hit is None:
                    self._pool[name] = (arr, dev)
                out.append(dev)
        return tuple(out)

    def _insert(self, key, entry: _Entry, leaves) -> _Entry:
        entry.key = key
        self._cache[key] = entry
        self._last = entry
        while len(self._cache) > self._maxsize:
            _, old = self._cache.popitem(last=False)
            self._info.evictions += 1
            self._fast = {k: e for k, e in self._fast.items() if e is not old}
            self._fast_np = {k: e for k, e in self._fast_np.items() if e is not old}
        self._seen.append((tuple(tuple(a.shape) for a in leaves), self._value_key(leaves)
                           if self._value_pos else ()))
        del self._seen[:-256]  # enough to name what keeps changing; bounded like the cache
        limit = self._warn_after
        if limit and not self._warned and self._info.compiles - 1 >= limit:
            self._warned = True
            warnings.warn(self._recompile_message(), RecompileWarning, stacklevel=3)
        return entry

    def _recompile_message(self) -> str:
        changing = []
        for i, name in enumerate(self._checker.names):
            shapes = [s[0][i] for s in self._seen if i < len(s[0])]
            for axis in range(max((len(s) for s in shapes), default=0)):
                sizes = sorted({s[axis] for s in shapes if axis < len(s)})
                if len(sizes) > 1:
                    shown = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
                    changing.append(f"input {name!r} (#{i}) axis {axis}: sizes {shown}")
        for j, i in enumerate(self._value_pos):
            values = {s[1][j] for s in self._seen if len(s[1]) > j}
            if len(values) > 1:
                changing.append(f"input {self._checker.names[i]!r} (#{i}): {len(values)} "
                                "different values (they decide shapes)")
        return (f"{self._label} compiled {self._info.compiles} times for new input signatures "
                f"(recompile_warning={self._warn_after}); what keeps changing: "
                f"{'; '.join(changing) or 'dtypes'}. Bucket or pad these dims (or fix those "
                f"values) so calls reuse executables; cache_size={self._maxsize} bounds memory.")

    def cache_info(self) -> CacheInfo:
        """Hits, misses, compiles, specializations, evictions, size and cached signatures."""
        info = CacheInfo(**{k: getattr(self._info, k) for k in CacheInfo.__dataclass_fields__})
        info.size = len(self._cache)
        info.signatures = [e.signature for e in self._cache.values()]
        return info

    def cache_clear(self) -> None:
        """Drop every cached executable (counted as evictions)."""
        self._info.evictions += len(self._cache)
        self._cache.clear()
        self._fast.clear()
        self._fast_np.clear()
        self._last = None

    def _sig_text(self, leaves) -> str:
        parts = []
        for i, (n, a) in enumerate(zip(self._checker.names, leaves)):
            s = f"{n}: {np.dtype(a.dtype).name}{list(a.shape)}"
            if i in self._value_pos:
                s += f"={np.asarray(a).tolist()}"
            parts.append(s)
        return "; ".join(parts)

    # --- what the model is -------------------------------------------------------------
    def _representative(self) -> Specialized:
        if self._rep is None:
            raise NotSpecializedError(
                f"{self._label} has no graph yet: {self._deferred or 'its import needs a call'}. "
                "Call it once, or compile with example inputs, to specialize it.")
        return self._rep

    @property
    def graph(self) -> Graph:
        """The optimized graph: the symbolic one, or the first specialization's."""
        return self._base if self._base is not None else self._representative().graph

    @property
    def source(self) -> Graph:
        return self._base_source if self._base is not None else self._representative().source

    @property
    def history(self):
        return self._base_history if self._base is not None else self._representative().history

    @property
    def specialized(self) -> dict:
        """Inputs whose values the representative graph was specialized to (name -> value)."""
        return dict(self._rep_bound)

    @property
    def symbolic(self) -> bool:
        """Whether one symbolic graph serves every call (no re-import per signature)."""
        return self._base is not None

    @property
    def platforms(self) -> tuple[str, ...]:
        return (TARGETS[self.target],)

    # --- params as a pure function's argument (training) ------------------------------
    @property
    def params(self) -> dict:
        """The optimized graph's weights: name -> array (a copy of the table, arrays shared)."""
        return dict(self.graph.params)

    def apply(self, params: dict, *args):
        """The optimized graph run with ``params`` (name -> array; names left out keep the
        graph's weights): a pure JAX function of ``params`` to jit, differentiate or train."""
        graph = self.graph
        unknown = sorted(set(params) - set(graph.params))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(graph.params), n=1)
            raise UsageFailure(f"apply(): {self._label} has no param {unknown[0]!r}"
                               + (f" (closest: {close[0]!r})" if close else "")
                               + f"; it has {len(graph.params)}: {', '.join(list(graph.params)[:8])}"
                               + (", ..." if len(graph.params) > 8 else ""))
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != self._rep_tree_for(graph) and tree != self._in_tree:
            raise CallError(f"{self._label} takes arguments structured as {self._in_tree}; got {tree}")
        out_tree = self._out_tree if self._base is not None else self._rep.out_tree
        flat = [params[k] if k in params else v for k, v in graph.params.items()]
        return jax.tree_util.tree_unflatten(out_tree, codegen.to_jax(graph)(flat, *leaves))

    def with_params(self, params: dict) -> "CompiledModel":
        """A new compiled model whose graph has ``params`` (name -> array) in place of its own;
        this one is unchanged."""
        graph = self.graph
        unknown = sorted(set(params) - set(graph.params))
        if unknown:
            raise UsageFailure(f"with_params(): {self._label} has no param {unknown[0]!r}")
        for k, v in params.items():
            old = graph.params[k]
            if tuple(np.shape(v)) != tuple(old.shape):
                raise UsageFailure(f"with_params(): param {k!r} has shape {tuple(old.shape)}, "
                                   f"got {tuple(np.shape(v))}")
        return self.with_graph(graph.with_params({k: np.asarray(v, dtype=graph.params[k].dtype)
                                                  for k, v in params.items()}))

    def with_graph(self, graph: Graph) -> "CompiledModel":
        """A new compiled model of ``graph`` (this one's graph with other weights or
        annotations), with this model's source, history and settings; this one is unchanged."""
        out_tree = self._out_tree if self._base is not None else self._representative().out_tree
        return CompiledModel(graph, self.source, target=self.target, in_tree=self._in_tree,
                             out_tree=out_tree, history=self.history, pipeline=self.pipeline,
                             example_args=self._example, specialized=dict(self._rep_bound),
                             inputs=[(v.name, v.type) for v in graph.inputs],
                             cache_size=self._maxsize, recompile_warning=self._warn_after,
                             name=self._label.removeprefix("model @"))

    # --- inspection --------------------------------------------------------------------
    def ir(self) -> str:
        """Text of the final IR."""
        return self.graph.to_text()

    def _lowered(self):
        graph = self.graph
        out_tree = self._out_tree if self._base is not None else self._rep.out_tree
        fn = _flat_structured(codegen.to_jax(graph), out_tree)
        ex = jax.tree_util.tree_leaves(self._example) if self._example else None
        specs = [jax.ShapeDtypeStruct(np.shape(e) if ex else tuple(
                     d if isinstance(d, int) else 1 for d in v.type.shape),
                     numpy_dtype(v.type.dtype))
                 for v, e in zip(graph.inputs, ex or [None] * len(graph.inputs))]
        return jax.jit(fn).lower(param_specs(graph), *specs)

    def stablehlo(self) -> str:
        """The StableHLO module XLA receives."""
        if self._exported is not None:
            return self._exported.mlir_module()
        with x64_scope(needs_x64(self.graph)):
            return self._lowered().as_text()

    def hlo(self, *args) -> str:
        """XLA's optimized HLO for this host's backend (with ``args``: of the executable that
        runs calls with their signature, compiled now if it is not cached)."""
        if not self.runnable:
            raise ExportOnlyError(f"XLA's optimized HLO for {self.target} needs a {self.target} "
                                  "host; stablehlo() shows what XLA receives")
        if args:
            leaves = self._checker.coerce(jax.tree_util.tree_leaves(args))
            self.warm_up(*args)
            key = tuple((a.shape, a.dtype) for a in leaves)
            if self._value_pos:
                key += self._value_key(leaves)
            return self._cache[key].exe.as_text()
        setup_compile_cache()
        with x64_scope(needs_x64(self.graph)):
            options = self.compiler_options
            return self._lowered().compile(compiler_options=options or None).as_text()

    def diff(self, pass_name, context: int = 3) -> str:
        """Unified diff of the IR text across a pass (by name or index in the pipeline)."""
        return self.history.find(pass_name).diff(context)

    def report(self, path) -> Path:
        """Write a self-contained HTML report of the pipeline (tables, remarks, IR diffs)."""
        from .report import write_report
        return write_report(self, path)

    def dump_ir(self, directory) -> list[Path]:
        """Write the IR (with weights) before the first pass and after each pass into a folder."""
        from .report import dump_ir
        return dump_ir(self.source, self.history, directory)

    def source_diff(self) -> str:
        """Unified diff from the traced IR to the final IR."""
        return "".join(difflib.unified_diff(self.source.to_text().splitlines(True),
                                            self.graph.to_text().splitlines(True),
                                            "source", "final"))

    # --- export ------------------------------------------------------------------------
    def _export(self, graph: Graph, in_tree, out_tree, concrete: list | None = None):
        if concrete is None:
            flat_specs = input_specs(graph)  # symbolic dims stay jax.export symbols
        else:
            flat_specs = [jax.ShapeDtypeStruct(tuple(np.shape(a)), numpy_dtype(v.type.dtype))
                          for v, a in zip(graph.inputs, concrete)]
        specs = jax.tree_util.tree_unflatten(in_tree, flat_specs)
        fn = _structured(codegen.to_jax(graph), in_tree, out_tree)
        try:
            return jax.export.export(jax.jit(fn), platforms=self.platforms)(param_specs(graph), *specs)
        except Exception as e:
            from .errors import TensorsmithError
            if isinstance(e, TensorsmithError) or concrete is not None:
                raise
            raise ExportError(
                f"jax.export cannot keep the symbolic dims of {self._label} "
                f"({', '.join(str(v.type) for v in graph.inputs)}) open: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}. Export a specialization instead: "
                f"cm.export(path, *example_inputs) pins the shapes to those inputs'.") from e

    def _export_target(self, example_args: tuple):
        """(graph, in_tree, out_tree, concrete leaves or None) for export()."""
        if example_args:
            leaves = self._checker.coerce(jax.tree_util.tree_leaves(example_args))
            self._checker.check(leaves)
            if self._base is not None:
                return self._base, self._in_tree, self._out_tree, leaves
            if not self.runnable:
                raise ExportError(f"{self._label}: specializing for an export needs a "
                                  f"{self.target} host here; compile with target='cpu'")
            self.warm_up(*example_args)
            key = tuple((a.shape, a.dtype) for a in leaves) + (
                self._value_key(leaves) if self._value_pos else ())
            entry = self._cache[key]
            return entry.graph, self._rep_tree_for(entry.graph), self._out_of(entry), leaves
        if self._base is not None:
            return self._base, self._in_tree, self._out_tree, None
        if self._rep is not None and self._example:
            ex = self._checker.coerce(jax.tree_util.tree_leaves(self._example))
            return self._rep.graph, self._rep_tree_for(self._rep.graph), self._rep.out_tree, ex
        inputs = ", ".join(repr(n) for n in self._checker.names)
        raise ExportError(
            f"{self._label} has no graph whose shapes stay open: {self._deferred or 'its import needs concrete input shapes or values'} "
            f"(inputs: {inputs}). Pin them: export a specialization with "
            f"cm.export(path, *example_inputs), or compile(model, *example_inputs) and export that.")

    def _rep_tree_for(self, graph: Graph):
        if self._flat:
            return jax.tree_util.tree_structure(tuple([0] * len(graph.inputs)))
        return self._in_tree

    def _out_of(self, entry: _Entry):
        if self._rep is not None and entry.graph is self._rep.graph:
            return self._rep.out_tree
        return jax.tree_util.tree_structure([0] * len(entry.graph.outputs)) \
            if self._flat else self._out_tree

    def export(self, path, *example_args) -> Path:
        """Write a self-contained artifact (StableHLO + weights + IR) that tensorsmith.load reads.

        Symbolic dims stay symbolic; with ``example_args`` the export is specialized to their
        shapes (and to the values of shape-deciding inputs).
        """
        graph, in_tree, out_tree, concrete = self._export_target(example_args)
        x64 = needs_x64(graph)
        with x64_scope(x64):
            if self._exported is not None and not example_args and graph is self._base:
                exported = self._exported
            else:
                exported = self._export(graph, in_tree, out_tree, concrete)
        module = bytes(exported.serialize())
        meta = {"format": EXPORT_FORMAT, "target": self.target, "platforms": list(exported.platforms),
                "module_sha256": hashlib.sha256(module).hexdigest(), "x64": x64, "pipeline": self.pipeline, "graph": graph.name,
                "inputs": [str(v.type) for v in graph.inputs],
                "outputs": [str(v.type) for v in graph.outputs]}
        arrays = [np.frombuffer(module, np.uint8),
                  np.frombuffer(json.dumps(meta).encode(), np.uint8),
                  np.frombuffer(graph.to_text().encode(), np.uint8),
                  *graph.params.values()]
        path = Path(path)
        atomic_write(path, pack_arrays(arrays))
        return path

    def export_onnx(self, path, *, opset: int | None = None) -> Path:
        """Write the model as ONNX; fake-quant becomes QuantizeLinear/DequantizeLinear (QDQ)."""
        from .export_onnx import export_compiled
        return export_compiled(self, path, opset=opset)

    def __repr__(self) -> str:
        mode = "runnable" if self.runnable else "export-only"
        if self._base is None and self._rep is None:
            return f"<CompiledModel {self._label} target={self.target} ({mode}), specializes per call>"
        g = self.graph
        return (f"<CompiledModel @{g.name} target={self.target} ({mode}), "
                f"{len(g.nodes)} nodes, {len(g.params)} params>")


def _structured(fn, in_tree, out_tree):
    """Wrap a flat graph function so it takes and returns the user's pytrees."""
    def wrapped(params, *args):
        flat = jax.tree_util.tree_leaves(args)
        outs = fn(params, *flat)
        return jax.tree_util.tree_unflatten(out_tree, outs)
    return wrapped


__all__ = ["ArgChecker", "CacheInfo", "CompileFailure", "CompiledModel", "ExportOnlyError",
           "LoadedModel", "NotSpecializedError", "RecompileWarning", "SpecializationError",
           "Specialized", "TargetError", "load_export"]
