"""The public entry points: trace, compile, load."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from . import codegen
from .codegen.compile_cache import setup_compile_cache
from .codegen.target import check_compiler_options, check_target, host_has
from .compiled import (DEFAULT_CACHE_SIZE, DEFAULT_RECOMPILE_WARNING, CompiledModel, LoadedModel,
                       Specialized, load_export)
from .errors import ExportError
from .frontends.jax import trace as trace  # re-exported: tensorsmith.trace
from .frontends.jax import trace_model
from .ir import Graph, numpy_dtype
from .ir import load as ir_load
from .ir import verify
from .passes import PassContext, format_pipeline, parse_pipeline, run_pipeline
from .passes.manager import History, no_progress


def _is_onnx(model) -> bool:
    if isinstance(model, (bytes, bytearray)):
        return True
    if isinstance(model, (str, os.PathLike)):
        return True
    return type(model).__name__ == "ModelProto"


class Imported(NamedTuple):
    """A model in IR form, the pytree structure of its inputs and outputs, and the input
    values it was specialized to (ONNX shape inputs; empty for most models)."""

    graph: Graph
    in_tree: Any
    out_tree: Any
    bound: dict


def _flat_trees(g: Graph, bound: dict | None = None) -> Imported:
    # Graph and ONNX models take positional arrays and return a list, like onnxruntime.
    return Imported(g, jax.tree_util.tree_structure(tuple([0] * len(g.inputs))),
                    jax.tree_util.tree_structure([0] * len(g.outputs)), bound or {})


def _is_torch(model) -> bool:
    from .frontends.torch import is_torch_model  # no torch import unless it is a torch model
    return is_torch_model(model)


def _torch_import(model, example_args, dynamic_shapes, name) -> Imported:
    from .frontends.torch import import_torch
    t = import_torch(model, *example_args, dynamic_shapes=dynamic_shapes, name=name)
    return Imported(t.graph, t.in_tree, t.out_tree, {})


def _numpy_args(example_args: tuple) -> tuple:
    """Torch tensors among example inputs as numpy arrays (what compiled models take)."""
    from .frontends.torch.types import to_numpy
    return tuple(to_numpy(a) if type(a).__module__.startswith("torch") and hasattr(a, "detach")
                 else a for a in example_args)


def import_model(model, *example_args, params=None, batch_dim=None, name=None,
                 dynamic_shapes=None) -> Imported:
    """The IR of any model kind compile() accepts, with its input/output structure."""
    if isinstance(model, Graph):  # hand-made or loaded: checked before any pass sees it
        return _flat_trees(_verified(model, "the input graph"))
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".tsir"):
        return _flat_trees(_verified(ir_load(model), f"the input graph in {str(model)!r}"))
    if _is_onnx(model):
        return _flat_trees(*import_onnx_model(model, example_args, name))
    if _is_torch(model):
        return _torch_import(model, example_args, dynamic_shapes, name)
    if callable(model):
        t = trace_model(model, *example_args, params=params, batch_dim=batch_dim, name=name)
        return Imported(t.graph, t.in_tree, t.out_tree, {})
    raise TypeError(f"compile() takes a JAX function, an ONNX model (path, bytes, ModelProto) or "
                    f"a tensorsmith Graph; got {type(model).__name__}")


def _verified(g: Graph, what: str) -> Graph:
    """``g`` if it is valid IR, else a VerificationError that blames the graph, not a pass."""
    verify(g, context=f"{what} @{g.name} is not valid IR")
    return g


def import_onnx_model(model, example_args: tuple, name=None):
    """(graph, bound): an ONNX import, specialized to example inputs where nodes need values.

    Some models compute shapes from graph inputs (Reshape's shape fed as an input). XLA
    needs static shapes, so such inputs are bound to the example values given here. This is
    for callers that need one graph (the CLI, bisect); compile() instead specializes per call.
    """
    from .frontends.onnx import (NeedsInputValuesError, OnnxImportError, import_onnx,
                                 import_onnx_specialized, load)
    try:
        return import_onnx(model, name=name), {}
    except NeedsInputValuesError as e:
        if not example_args:
            raise OnnxImportError(f"{e}\n(pass example inputs, compile(model, *inputs), to "
                                  "specialize the model to their values)") from None
        loaded = load(model)
        initialized = {t.name for t in loaded.model.graph.initializer}
        names = [i.name for i in loaded.model.graph.input if i.name not in initialized]
        if len(example_args) != len(names):
            raise ValueError(f"{loaded.label} has {len(names)} inputs ({', '.join(names)}); "
                             f"compile() got {len(example_args)} example inputs") from None
        available = {k: np.asarray(a) for k, a in zip(names, example_args)}
        return import_onnx_specialized(loaded.model, available, name=name)


def _flat_calibration(calibration, in_tree) -> list[tuple] | None:
    if calibration is None:
        return None
    batches = []
    for item in calibration:
        args = item if isinstance(item, tuple) else (item,)
        batches.append(tuple(jax.tree_util.tree_leaves(args)))
    return batches


def _deferrable(e: Exception) -> bool:
    """Whether a failed symbolic import may succeed at a call's concrete shapes."""
    from .errors import TensorsmithError
    return isinstance(e, (TensorsmithError, TypeError, ValueError, ArithmeticError)) or \
        type(e).__name__ == "InconclusiveDimensionOperation"


class _Frontend(NamedTuple):
    """How compile() gets graphs: the symbolic import (or why there is none) and re-imports."""

    base: Imported | None
    deferred: str                       # why there is no symbolic graph ('' when there is)
    specialize: Any                     # (shapes, values) -> Imported, or None
    inputs: list                        # [(name, TensorType)] for call checks
    in_tree: Any
    label: str


def _onnx_frontend(model, name) -> _Frontend:
    from .frontends.onnx import (NeedsInputValuesError, UnsupportedNodesError, import_onnx,
                                 import_onnx_specialized, input_types, load)
    loaded = load(model)  # read once: the caller's file may change later, our imports won't
    decl = input_types(loaded)
    tree = jax.tree_util.tree_structure(tuple([0] * len(decl)))

    def specialize(shapes, values):
        graph, bound = import_onnx_specialized(loaded, values, name=name, input_shapes=shapes)
        return _flat_trees(graph, bound)

    try:
        base = _flat_trees(import_onnx(loaded, name=name))
        # The symbolic graph serves every call; re-import only where it cannot compile.
        return _Frontend(base, "", specialize, decl, tree, loaded.model.graph.name)
    except NeedsInputValuesError as e:
        why = (f"its shapes depend on the values of input(s) {', '.join(map(repr, e.inputs))} "
               f"({'; '.join(str(n) for n in e.nodes[:3])})")
    except Exception as e:  # noqa: BLE001 - re-raised unless concrete shapes may help
        # Some converters cannot compute with symbolic dims (or fail on them with a raw
        # TypeError): with symbolic inputs, import again at each call's concrete shapes.
        symbolic = [n for n, t in decl if not t.is_static]
        if not symbolic or not _deferrable(e):
            raise
        kind = "" if isinstance(e, UnsupportedNodesError) else f"{type(e).__name__}: "
        detail = str(e).splitlines()[-1].strip() if str(e) else ""
        why = (f"it does not import with symbolic input dims ({', '.join(symbolic)} not static): "
               f"{kind}{detail}")
    return _Frontend(None, why, specialize, decl, tree, loaded.model.graph.name)


def _jax_frontend(fn, example_args, params, batch_dim, name) -> _Frontend:
    from .frontends.jax import input_declarations
    decl = input_declarations(fn, example_args, params is not None, batch_dim)
    in_tree = jax.tree_util.tree_structure(example_args)

    def specialize(shapes, values):
        leaves = [jax.ShapeDtypeStruct(shapes[n], numpy_dtype(t.dtype)) for n, t in decl]
        args = jax.tree_util.tree_unflatten(in_tree, leaves)
        t = trace_model(fn, *args, params=params, name=name)
        return Imported(t.graph, t.in_tree, t.out_tree, {})

    symbolic = [n for n, t in decl if not t.is_static]
    try:
        t = trace_model(fn, *example_args, params=params, batch_dim=batch_dim, name=name)
        return _Frontend(Imported(t.graph, t.in_tree, t.out_tree, {}), "", specialize if symbolic
                         else None, decl, t.in_tree, "")
    except Exception as e:  # noqa: BLE001 - re-raised unless concrete shapes may help
        if not symbolic or not _deferrable(e):
            raise
        why = (f"it does not trace with symbolic dims ({', '.join(symbolic)}): "
               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return _Frontend(None, why, specialize, decl, in_tree, "")


def _frontend(model, example_args, params, batch_dim, name, dynamic_shapes=None) -> _Frontend:
    if _is_torch(model):
        imp = _torch_import(model, example_args, dynamic_shapes, name)
        return _Frontend(imp, "", None, [(v.name, v.type) for v in imp.graph.inputs], imp.in_tree,
                         imp.graph.name)
    if _is_onnx(model) and not (isinstance(model, (str, os.PathLike))
                                and str(model).endswith(".tsir")):
        return _onnx_frontend(model, name)
    if callable(model) and not isinstance(model, Graph):
        return _jax_frontend(model, example_args, params, batch_dim, name)
    imp = import_model(model, *example_args, params=params, batch_dim=batch_dim, name=name)
    return _Frontend(imp, "", None, [(v.name, v.type) for v in imp.graph.inputs], imp.in_tree, "")


def _is_abstract(leaf) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct) and not all(
        isinstance(d, int) for d in leaf.shape)


def compile(model, *example_args, params=None, target: str = "cpu", passes=None,
            batch_dim=None, calibration=None, data: dict | None = None, verify: bool = True,
            print_ir_after: Sequence[str] | bool = (), name: str | None = None,
            dump_ir=None, cache_size: int = DEFAULT_CACHE_SIZE,
            recompile_warning: int | None = DEFAULT_RECOMPILE_WARNING,
            cast_inputs: bool = False, progress=None, warm_up: bool = True,
            compiler_options: dict | None = None, dynamic_shapes=None) -> CompiledModel:
    """Import ``model``, run the pass pipeline once, and lower it for ``target``.

    The result compiles one XLA executable per call signature (LRU of ``cache_size``);
    models whose import needs concrete shapes or shape-deciding input values are re-imported
    per signature. Example inputs are optional: they specialize early and warm the cache.
    ``passes``: a pipeline string (``"canonicalize,dce"``) or list; None (the default) runs
    the ``default`` pipeline, as the CLI does; ``[]`` or ``"none"`` runs no pass.
    ``calibration``: example argument tuples for passes that run the model.
    ``data``: other named inputs a pass documents that it needs.
    ``dump_ir``: a folder for ``00-source.tsir``, ``01-<pass>.tsir``, ... (with weights).
    ``recompile_warning``: warn once after this many recompiles (None: never).
    ``cast_inputs``: cast arguments of another dtype when the cast is safe in kind
    (f64 -> f32, int -> float); without it such calls raise ``CallError``.
    ``progress``: ``progress(text)`` -> a context manager around each step (import, each pass).
    ``warm_up``: compile for the example inputs' signature now (False: at the first call).
    ``compiler_options``: XLA compiler options for every executable (``{"xla_cpu_..": ".."}``),
    over those the pipeline chose (pass ``xla-options``); exports do not carry them.
    JAX's persistent compilation cache is turned on at the first compile (see
    ``codegen.compile_cache``; ``TENSORSMITH_COMPILE_CACHE=0`` turns it off).
    ``dynamic_shapes``: for a torch ``nn.Module``, ``torch.export``'s spec of symbolic dims
    (``({0: torch.export.Dim("batch", max=64)},)``); they stay symbolic in the IR.
    """
    check_target(target)
    # refuse bad names/options before doing any work
    steps = parse_pipeline("default" if passes is None else passes)
    setup_compile_cache()
    compiler_options = check_compiler_options(dict(compiler_options or {}), target,
                                              " in compile(compiler_options=...)")
    progress = progress or no_progress
    torch_model = _is_torch(model)
    frontend_args = example_args
    if torch_model:  # the compiled model takes numpy arrays, as for every other model kind
        example_args = _numpy_args(example_args)
    concrete = example_args and not any(_is_abstract(x) for x in jax.tree_util.tree_leaves(example_args))
    data = dict(data or {})
    if concrete:  # passes that measure (xla-options{ynn=auto}) time the model on these
        data.setdefault("example_inputs", tuple(jax.tree_util.tree_leaves(example_args)))
    ctx = PassContext(executor=codegen.executor, calibration=_flat_calibration(calibration, None),
                      data=data, target=target)

    def optimize(source: Graph):
        if not steps:
            return source, History()
        graph, history = run_pipeline(source, steps, ctx, verify_ir=verify,
                                      print_ir_after=print_ir_after, progress=progress)
        chosen = history.compiler_options
        if chosen:  # a name XLA refuses fails here, not at the first call
            setters = sorted({r.name for r in history if r.compiler_options})
            check_compiler_options(chosen, target, f" set by pass {', '.join(setters)}")
        return graph, history

    with progress("importing the model"):
        front = _frontend(model, frontend_args, params, batch_dim, name, dynamic_shapes)
    if front.base is None and not host_has(target):
        # An export-only target cannot specialize at call time: specialize now or say how.
        if not concrete:
            raise ExportError(f"{front.label or 'the model'} cannot be lowered for {target} without "
                              f"example inputs: {front.deferred}. Pass example inputs to "
                              "compile() to pin the shapes and values.")
        leaves = jax.tree_util.tree_leaves(example_args)
        names = [n for n, _ in front.inputs]
        front = front._replace(base=front.specialize(
            {n: tuple(np.shape(a)) for n, a in zip(names, leaves)},
            {n: np.asarray(a) for n, a in zip(names, leaves)}), specialize=None)
    graph = source = history = None
    in_tree, out_tree, bound = front.in_tree, None, {}
    if front.base is not None:
        source, in_tree, out_tree, bound = front.base
        graph, history = optimize(source)
        if dump_ir is not None:  # before codegen, so the dumps exist even if lowering fails
            from .report import dump_ir as write_dumps
            write_dumps(source, history, dump_ir)
    specializer = None
    if front.specialize is not None:
        dumped = [dump_ir is None or front.base is not None]

        def specializer(shapes, values):
            imp = front.specialize(shapes, values)
            g, h = optimize(imp.graph)
            if not dumped[0]:
                from .report import dump_ir as write_dumps
                write_dumps(imp.graph, h, dump_ir)
                dumped[0] = True
            return Specialized(g, imp.graph, h, imp.bound, imp.out_tree)
    cm = CompiledModel(graph, source, target=target, in_tree=in_tree, out_tree=out_tree,
                       history=history if history is not None else History(),
                       pipeline=format_pipeline(steps), example_args=example_args if concrete else (),
                       specialized=bound, specializer=specializer, inputs=front.inputs,
                       deferred=front.deferred, cache_size=cache_size,
                       recompile_warning=recompile_warning, cast_inputs=cast_inputs,
                       jax_dtypes=callable(model) and not isinstance(model, Graph)
                       and not _is_onnx(model) and not torch_model, name=name or front.label,
                       compiler_options=compiler_options)
    if concrete and cm.runnable and warm_up:
        cm.warm_up(*example_args)  # early specialization: errors surface here, not at a call
    return cm


def load(path) -> LoadedModel:
    """Load a model written by ``CompiledModel.export`` (runs where its platform is present)."""
    return load_export(Path(path))
