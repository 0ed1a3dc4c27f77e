"""The public entry points: trace, compile, load."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from . import codegen
from .codegen.target import check_target
from .compiled import CompiledModel, LoadedModel, load_export
from .frontends.jax import trace as trace  # re-exported: tensorsmith.trace
from .frontends.jax import trace_model
from .ir import Graph
from .ir import load as ir_load
from .ir import verify
from .passes import PassContext, format_pipeline, parse_pipeline, run_pipeline
from .passes.manager import History


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


def import_model(model, *example_args, params=None, batch_dim=None, name=None) -> Imported:
    """The IR of any model kind compile() accepts, with its input/output structure."""
    if isinstance(model, Graph):  # hand-made or loaded: checked before any pass sees it
        return _flat_trees(_verified(model, "the input graph"))
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".tsir"):
        return _flat_trees(_verified(ir_load(model), f"the input graph in {str(model)!r}"))
    if _is_onnx(model):
        return _flat_trees(*import_onnx_model(model, example_args, name))
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
    needs static shapes, so such inputs are bound to the example values given to compile();
    the compiled model then refuses calls with other values (a guard, not a silent mismatch).
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


def compile(model, *example_args, params=None, target: str = "cpu", passes=None,
            batch_dim=None, calibration=None, data: dict | None = None, verify: bool = True,
            print_ir_after: Sequence[str] | bool = (), name: str | None = None,
            dump_ir=None) -> CompiledModel:
    """Trace/import ``model``, run the pass pipeline, and lower it for ``target``.

    ``passes``: a pipeline string (``"canonicalize,dce"``), a list, or ``"default"``.
    ``calibration``: example argument tuples for passes that run the model.
    ``data``: other named inputs a pass documents that it needs.
    ``dump_ir``: a folder for ``00-source.tsir``, ``01-<pass>.tsir``, ... (with weights).
    """
    check_target(target)
    steps = parse_pipeline(passes)  # refuse bad names/options before doing any work
    source, in_tree, out_tree, bound = import_model(model, *example_args, params=params,
                                                    batch_dim=batch_dim, name=name)
    ctx = PassContext(executor=codegen.executor, calibration=_flat_calibration(calibration, in_tree),
                      data=dict(data or {}))
    graph, history = (run_pipeline(source, steps, ctx, verify_ir=verify,
                                   print_ir_after=print_ir_after) if steps else (source, History()))
    if dump_ir is not None:  # before codegen, so the dumps exist even if lowering fails
        from .report import dump_ir as write_dumps
        write_dumps(source, history, dump_ir)
    return CompiledModel(graph, source, target=target, in_tree=in_tree, out_tree=out_tree,
                         history=history, pipeline=format_pipeline(steps),
                         example_args=example_args, specialized=bound)


def load(path) -> LoadedModel:
    """Load a model written by ``CompiledModel.export`` (runs where its platform is present)."""
    return load_export(Path(path))
