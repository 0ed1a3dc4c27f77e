"""PyTorch frontend: ``torch.export`` an ``nn.Module``, decompose to Core ATen, convert to IR.

torch is optional (``pip install -e ".[torch]"``) and imported only when a module is given.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from .errors import TorchImportError, UnsupportedOp, UnsupportedOpsError
from .registry import CONVERTERS, aten_op, core_aten_ops, coverage

__all__ = ["TorchImport", "TorchImportError", "UnsupportedOp", "UnsupportedOpsError",
           "aten_op", "core_aten_ops", "coverage", "export_module", "import_torch",
           "is_torch_model", "CONVERTERS"]


def require_torch():
    """The torch module, or a TorchImportError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise TorchImportError("compiling a PyTorch model needs torch: pip install -e \".[torch]\" "
                               "(or pip install torch==2.13.0 --index-url "
                               "https://download.pytorch.org/whl/cpu)") from None
    from . import ops  # noqa: F401  (fills the converter table)
    return torch


def is_torch_model(model) -> bool:
    """Whether ``model`` is an ``nn.Module`` or ``ExportedProgram`` (without importing torch)."""
    for cls in type(model).__mro__:
        if (cls.__module__, cls.__name__) in (("torch.nn.modules.module", "Module"),
                                              ("torch.export.exported_program", "ExportedProgram")):
            return True
    return False


class TorchImport(NamedTuple):
    """The IR of a torch model, its input/output pytree structure, and its program."""

    graph: Any
    in_tree: Any
    out_tree: Any
    program: Any


def export_module(module, example_args: tuple, kwargs: dict | None = None,
                  dynamic_shapes=None, strict: bool = False):
    """``torch.export`` of ``module`` in eval mode, decomposed to Core ATen.

    The module's training flags are restored afterwards; its parameters and the example
    tensors are not touched.
    """
    torch = require_torch()
    if isinstance(module, torch.export.ExportedProgram):
        return module.run_decompositions()
    label = type(module).__name__
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            ep = torch.export.export(module, tuple(example_args), kwargs=kwargs,
                                     dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as e:  # noqa: BLE001 - torch's reason, named as the user's model
        raise TorchImportError(f"torch.export could not export {label}: {type(e).__name__}: "
                               f"{_first_lines(str(e))}") from e
    finally:
        for m, flag in flags:
            m.training = flag
    try:
        return ep.run_decompositions()
    except Exception as e:  # noqa: BLE001
        raise TorchImportError(f"decomposing {label} to Core ATen failed: {type(e).__name__}: "
                               f"{_first_lines(str(e))}") from e


def _first_lines(text: str, n: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")


def symbol_names(program, example_args: tuple, dynamic_shapes, forward=None) -> dict[str, str]:
    """torch's shape symbols (``s77``) -> the names the user gave them (``Dim('batch')``)."""
    from torch.export.graph_signature import InputKind
    if dynamic_shapes is None:
        return {}
    specs = dynamic_shapes
    if isinstance(specs, dict) and forward is not None:  # keyed by forward's argument names
        params = [p for p in inspect.signature(forward).parameters]
        specs = [specs.get(p) for p in params[:len(example_args)]]
    user = [n for n, s in zip([n for n in program.graph.nodes if n.op == "placeholder"],
                              program.graph_signature.input_specs)
            if s.kind == InputKind.USER_INPUT]
    names: dict[str, str] = {}
    for node, spec in zip(user, list(specs)):
        if spec is None:
            continue
        items = spec.items() if isinstance(spec, dict) else enumerate(spec)
        shape = node.meta["val"].shape
        for axis, dim in items:
            dname = getattr(dim, "__name__", None)
            expr = getattr(getattr(shape[axis], "node", None), "expr", None)
            if dname and expr is not None and expr.is_Symbol:
                names.setdefault(str(expr), dname)
    return names


def _as_torch(torch, a):
    """Example inputs may be numpy arrays (the CLI passes them so): torch tensors, copied."""
    if isinstance(a, torch.Tensor):
        return a
    import numpy as np
    arr = np.asarray(a)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


def _plain_tree(obj):
    """Torch pytree containers as plain tuples/lists/dicts jax understands (leaves: 0)."""
    if isinstance(obj, tuple):
        return tuple(_plain_tree(x) for x in obj)
    if isinstance(obj, list):
        return [_plain_tree(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain_tree(v) for k, v in obj.items()}
    if hasattr(obj, "to_tuple"):  # transformers' ModelOutput
        return {k: _plain_tree(v) for k, v in obj.items()}
    return 0


def import_torch(model, *example_args, kwargs: dict | None = None, dynamic_shapes=None,
                 name: str | None = None) -> TorchImport:
    """The IR of a torch ``nn.Module`` (or ``ExportedProgram``) called on ``example_args``."""
    torch = require_torch()
    import jax
    from torch.utils import _pytree as torch_tree
    from .converter import Importer
    example_args = tuple(_as_torch(torch, a) for a in example_args)
    program = export_module(model, example_args, kwargs, dynamic_shapes)
    forward = getattr(model, "forward", None)
    label = type(model).__name__
    names = symbol_names(program, example_args, dynamic_shapes, forward)
    graph, user = Importer(program, label, names).run(name or label)
    out_spec = program.call_spec.out_spec
    leaves = [0] * len(user)
    try:
        outs = torch_tree.tree_unflatten(leaves, out_spec) if out_spec is not None else leaves
    except Exception:  # noqa: BLE001 - an output container torch cannot rebuild: a flat list
        outs = leaves
    out_tree = jax.tree_util.tree_structure(_plain_tree(outs))
    if isinstance(model, torch.export.ExportedProgram):
        in_tree = jax.tree_util.tree_structure(tuple([0] * len(graph.inputs)))
    else:
        in_tree = jax.tree_util.tree_structure(tuple([0] * len(example_args)))
    return TorchImport(graph, in_tree, out_tree, program)
