"""The public entry points: trace, compile, load."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import jax

from . import codegen
from .codegen.target import check_target
from .compiled import CompiledModel, LoadedModel, load_export
from .frontends.jax import trace as trace  # re-exported: tensorsmith.trace
from .frontends.jax import trace_model
from .ir import Graph
from .passes import PassContext, format_pipeline, parse_pipeline, run_pipeline
from .passes.manager import History


def _is_onnx(model) -> bool:
    if isinstance(model, (bytes, bytearray)):
        return True
    if isinstance(model, (str, os.PathLike)):
        return True
    return type(model).__name__ == "ModelProto"


def import_model(model, *example_args, params=None, batch_dim=None, name=None):
    """(graph, in_tree, out_tree) for any model kind compile() accepts."""
    if isinstance(model, Graph):
        n = len(model.inputs)
        in_tree = jax.tree_util.tree_structure(tuple([0] * n))
        out_tree = jax.tree_util.tree_structure([0] * len(model.outputs))
        return model, in_tree, out_tree
    if _is_onnx(model):
        from .frontends.onnx import import_onnx
        g = import_onnx(model, name=name)
        n = len(g.inputs)
        return (g, jax.tree_util.tree_structure(tuple([0] * n)),
                jax.tree_util.tree_structure([0] * len(g.outputs)))
    if callable(model):
        t = trace_model(model, *example_args, params=params, batch_dim=batch_dim, name=name)
        return t.graph, t.in_tree, t.out_tree
    raise TypeError(f"compile() takes a JAX function, an ONNX model (path, bytes, ModelProto) or "
                    f"a tensorsmith Graph; got {type(model).__name__}")


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
    source, in_tree, out_tree = import_model(model, *example_args, params=params,
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
                         example_args=example_args)


def load(path) -> LoadedModel:
    """Load a model written by ``CompiledModel.export`` (runs where its platform is present)."""
    return load_export(Path(path))
