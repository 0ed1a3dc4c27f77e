"""CompiledModel: the result of compile(): callable, inspectable, exportable."""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path


import jax
import numpy as np

from . import codegen
from .codegen.target import (TARGETS, TargetError, host_has, input_specs, needs_x64, param_specs,
                             x64_scope)
from .ir import Graph
from .ir.serialize import FileLoadError as ExportFileError, atomic_write, pack_arrays
from .errors import CallError, ExportError

EXPORT_FORMAT = "tensorsmith-export/1"


class SpecializationError(CallError, ValueError):
    """A model specialized to an input's value was called with another value."""


class ExportOnlyError(CallError, RuntimeError):
    """The model was lowered for a target this host does not have; it can only be exported."""


def _structured(fn, in_tree, out_tree):
    """Wrap a flat graph function so it takes and returns the user's pytrees."""
    def wrapped(params, *args):
        flat = jax.tree_util.tree_leaves(args)
        outs = fn(params, *flat)
        return jax.tree_util.tree_unflatten(out_tree, outs)
    return wrapped


class CompiledModel:
    """A model after tracing, passes and codegen for one target."""

    def __init__(self, graph: Graph, source: Graph, *, target: str, in_tree, out_tree,
                 history=(), pipeline: str = "", example_args: tuple = (),
                 specialized: dict | None = None):
        self.graph, self.source, self.target = graph, source, target
        self.history = history
        self.pipeline = pipeline
        self._in_tree, self._out_tree = in_tree, out_tree
        self._example = example_args
        # Inputs whose values were baked in at import (ONNX shape inputs): checked per call.
        self.specialized = dict(specialized or {})
        positions = {v.name: i for i, v in enumerate(graph.inputs)}
        self._guards = [(positions[k], k, np.asarray(v)) for k, v in self.specialized.items()
                        if k in positions]
        self._fn = _structured(codegen.to_jax(graph), in_tree, out_tree)
        self.runnable = host_has(target)
        self._exported = None
        # 64-bit graphs (ONNX int64/double models) run with JAX's x64 mode on for their
        # calls only, so JAX does not silently truncate them and user code is unaffected.
        self._x64 = needs_x64(graph)
        with x64_scope(self._x64):
            if self.runnable:
                device = jax.devices(target)[0]
                self._params = tuple(jax.device_put(np.asarray(a), device)
                                     for a in graph.params.values())
                self._jitted = jax.jit(self._fn)
            else:  # lower now, so a target without hardware here still fails early if it can't
                self._exported = self._export()

    # --- running -----------------------------------------------------------------------
    def __call__(self, *args):
        if not self.runnable:
            raise ExportOnlyError(
                f"this model was compiled for target={self.target!r}, which this host does not "
                f"have (devices: {', '.join(sorted({d.platform for d in jax.devices()}))}); it is "
                f"export-only. Call .export(path) and run it on a {self.target} host with "
                f"tensorsmith.load(path)(*args), or compile with target='cpu' to run here.")
        if self._guards:
            self._check_guards(args)
        if self._x64:
            with jax.enable_x64(True):
                return self._jitted(self._params, *args)
        return self._jitted(self._params, *args)

    def _check_guards(self, args) -> None:
        for i, name, want in self._guards:
            got = np.asarray(args[i])
            if got.shape != want.shape or not np.array_equal(got, want):
                raise SpecializationError(
                    f"input {name!r} was specialized to {want.tolist()} when the model was "
                    f"compiled (its value decides shapes); this call passes {got.tolist()}. "
                    f"Compile again with the new value as the example input.")

    @property
    def platforms(self) -> tuple[str, ...]:
        return (TARGETS[self.target],)

    # --- inspection --------------------------------------------------------------------
    def ir(self) -> str:
        """Text of the final IR."""
        return self.graph.to_text()

    def _lowered(self):
        specs = self._arg_specs(concrete=True)
        p_specs = param_specs(self.graph)
        return self._jitted.lower(p_specs, *specs)

    def _arg_specs(self, concrete: bool):
        flat = input_specs(self.graph)
        if concrete:
            ex = jax.tree_util.tree_leaves(self._example) if self._example else None
            flat = [jax.ShapeDtypeStruct(np.shape(e) if ex else tuple(
                        d if isinstance(d, int) else 1 for d in v.type.shape), s.dtype)
                    for v, s, e in zip(self.graph.inputs, flat, ex or [None] * len(flat))]
        return jax.tree_util.tree_unflatten(self._in_tree, flat)

    def stablehlo(self) -> str:
        """The StableHLO module XLA receives."""
        if self._exported is not None:
            return self._exported.mlir_module()
        with x64_scope(self._x64):
            return self._lowered().as_text()

    def hlo(self) -> str:
        """XLA's optimized HLO for this host's backend."""
        if self._exported is not None:
            raise ExportOnlyError(f"XLA's optimized HLO for {self.target} needs a {self.target} "
                                  "host; stablehlo() shows what XLA receives")
        with x64_scope(self._x64):
            return self._lowered().compile().as_text()

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
    def _export(self):
        flat_specs = input_specs(self.graph)
        specs = jax.tree_util.tree_unflatten(self._in_tree, flat_specs)
        p_specs = param_specs(self.graph)
        return jax.export.export(jax.jit(self._fn), platforms=self.platforms)(p_specs, *specs)

    def export(self, path) -> Path:
        """Write a self-contained artifact (StableHLO + weights + IR) that tensorsmith.load reads."""
        with x64_scope(self._x64):
            exported = self._exported or self._export()
        module = bytes(exported.serialize())
        meta = {"format": EXPORT_FORMAT, "target": self.target, "platforms": list(exported.platforms),
                "module_sha256": hashlib.sha256(module).hexdigest(),
                "x64": self._x64,
                "pipeline": self.pipeline, "graph": self.graph.name,
                "inputs": [str(v.type) for v in self.graph.inputs],
                "outputs": [str(v.type) for v in self.graph.outputs]}
        arrays = [np.frombuffer(module, np.uint8),
                  np.frombuffer(json.dumps(meta).encode(), np.uint8),
                  np.frombuffer(self.graph.to_text().encode(), np.uint8),
                  *self.graph.params.values()]
        path = Path(path)
        atomic_write(path, pack_arrays(arrays))
        return path

    def __repr__(self) -> str:
        mode = "runnable" if self.runnable else "export-only"
        return (f"<CompiledModel @{self.graph.name} target={self.target} ({mode}), "
                f"{len(self.graph.nodes)} nodes, {len(self.graph.params)} params>")


class LoadedModel:
    """An exported model read back: callable on a host of one of its platforms."""

    def __init__(self, exported, meta: dict, graph: Graph | None, params: tuple, path: str):
        self.exported, self.meta, self.graph, self.path = exported, meta, graph, path
        self._params = params

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.exported.platforms)

    def __call__(self, *args):
        here = jax.default_backend()
        here = {"gpu": "cuda"}.get(here, here)
        if here not in self.platforms:
            raise ExportOnlyError(f"{self.path} was exported for {', '.join(self.platforms)}; this "
                                  f"host runs {here}. Run it on a {self.meta.get('target')} host.")
        with x64_scope(bool(self.meta.get("x64"))):
            return self.exported.call(self._params, *args)

    def __repr__(self) -> str:
        return f"<LoadedModel {self.path} platforms={self.platforms}>"


def load_export(path) -> LoadedModel:
    """Read an artifact written by CompiledModel.export (no pickle); every array is checked."""
    from .ir.serialize import open_npz, parse_file_text, read_member
    path = Path(path)
    label = str(path)
    if _not_a_zip(path):
        raise ExportFileError(f"{label!r} is not a tensorsmith export (those are written by "
                              f"CompiledModel.export); if it is a model (ONNX, .tsir), call "
                              f"tensorsmith.compile({label!r}) instead")
    with open_npz(path, "exported model") as zf:
        names = [n for n in zf.namelist() if n.endswith(".npy")]
        if not {"p0.npy", "p1.npy", "p2.npy"} <= set(names):
            raise ExportFileError(f"{label!r} is not a tensorsmith export (an npz without its "
                                  "module, metadata and IR); write one with CompiledModel.export")
        module, meta_bytes, text_bytes = (read_member(zf, f"p{i}", label, None) for i in range(3))
        meta = _export_meta(meta_bytes, label)
        try:
            text = text_bytes.tobytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExportFileError(f"{label!r}: its IR text is not UTF-8 ({e.reason})") from None
        decl = parse_file_text(text, label)
        if len(names) != 3 + len(decl.params):
            raise ExportFileError(f"{label!r} holds {len(names) - 3} weight arrays, the IR it "
                                  f"carries declares {len(decl.params)} params")
        arrays = [read_member(zf, f"p{i + 3}", label, decl.param(k).type, k)
                  for i, k in enumerate(decl.params)]
    graph = parse_file_text(text, label, dict(zip(decl.params, arrays)))
    digest = meta.get("module_sha256")
    if digest is not None and hashlib.sha256(module.tobytes()).hexdigest() != digest:
        raise ExportFileError(f"{label!r}: its compiled module does not match its checksum "
                              "(the file was modified or damaged)")
    try:
        exported = jax.export.deserialize(bytearray(module.tobytes()))
    except Exception as e:  # jax's flatbuffer/MLIR readers raise many types on bad bytes
        raise ExportFileError(f"{label!r}: its compiled module cannot be read: "
                              f"{type(e).__name__}: {e}") from None
    return LoadedModel(exported, meta, graph, tuple(arrays), label)


def _not_a_zip(path: Path) -> bool:
    """Whether an existing file does not start like a zip archive (every export is one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:  # missing or unreadable: open_npz names the problem
        return False
    return head not in (b"PK\x03\x04", b"PK\x05\x06")


def _export_meta(raw: np.ndarray, label: str) -> dict:
    """An export's JSON metadata, checked for the format tag."""
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ExportFileError(f"{label!r} is not a tensorsmith export: its metadata is not "
                              f"JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ExportFileError(f"{label!r} has format {got!r}, expected {EXPORT_FORMAT!r}")
    return meta


__all__ = ["CompiledModel", "ExportOnlyError", "LoadedModel", "TargetError", "load_export"]
