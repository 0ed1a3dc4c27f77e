"""Exports read back: ``tensorsmith.load`` checks every array and the module, then runs it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np

from .callcheck import ArgChecker
from .codegen.target import x64_scope
from .errors import CallError
from .ir import Graph
from .ir.serialize import FileLoadError as ExportFileError

EXPORT_FORMAT = "tensorsmith-export/1"


class ExportOnlyError(CallError, RuntimeError):
    """The model was lowered for a target this host does not have; it can only be exported."""


class LoadedModel:
    """An exported model read back: callable on a host of one of its platforms."""

    def __init__(self, exported, meta: dict, graph: Graph | None, params: tuple, path: str):
        self.exported, self.meta, self.graph, self.path = exported, meta, graph, path
        self._params = params
        self._checker = (ArgChecker([(v.name, v.type) for v in graph.inputs], repr(path),
                                    requires=graph.requires)
                         if graph is not None else None)
        self._ok: set = set()  # signatures already checked
        self._run = None  # jax.jit of the exported call (made at the first call)

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.exported.platforms)

    def __call__(self, *args):
        here = jax.default_backend()
        here = {"gpu": "cuda"}.get(here, here)
        if here not in self.platforms:
            raise ExportOnlyError(f"{self.path} was exported for {', '.join(self.platforms)}; this "
                                  f"host runs {here}. Run it on a {self.meta.get('target')} host.")
        if self._checker is not None:
            leaves = jax.tree_util.tree_leaves(args)
            if len(leaves) == len(args):  # flat arguments, as graph inputs
                args = tuple(self._checker.coerce(args))
                key = tuple((a.shape, a.dtype) for a in args)
                if key not in self._ok:
                    self._checker.check(args)
                    self._ok.add(key)
        with x64_scope(bool(self.meta.get("x64"))):
            if self._run is None:
                # Jitted once, params on the device once: Exported.call alone re-dispatches
                # from Python and copies every weight each call (an MLP: 350 us vs 60 us).
                self._params = jax.device_put(self._params)
                self._run = jax.jit(self.exported.call)
            return self._run(self._params, *args)

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
