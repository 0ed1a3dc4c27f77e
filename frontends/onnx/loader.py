"""Reading and validating ONNX models: paths, bytes or ModelProto; external data kept in its folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto
from ...errors import LoadError


class OnnxLoadError(LoadError, ValueError):
    """The model could not be read: not ONNX, truncated, or its external data is bad."""


@dataclass
class LoadedOnnx:
    """A model ready for conversion: the proto (never the caller's object if we changed it),
    the folder its external data lives in, and how errors name it."""

    model: ModelProto
    base_dir: Path | None
    label: str


def load(model) -> LoadedOnnx:
    """Read ``model`` (path, bytes or ModelProto), validate it and load external data."""
    if isinstance(model, ModelProto):
        loaded = LoadedOnnx(model, None, "the given ModelProto")
    elif isinstance(model, (bytes, bytearray, memoryview)):
        loaded = LoadedOnnx(_parse(bytes(model), "the given bytes"), None, "the given bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise OnnxLoadError(f"no ONNX model at {str(path)!r}"
                                + (" (it is a directory)" if path.is_dir() else ""))
        loaded = LoadedOnnx(_parse(path.read_bytes(), repr(str(path))), path.resolve().parent,
                            repr(str(path)))
    else:
        raise TypeError(f"import_onnx takes a path, bytes or onnx.ModelProto; got "
                        f"{type(model).__name__}")
    _check_model(loaded)
    external = [t for t in _all_tensors(loaded.model) if _is_external(t)]
    if external:
        loaded.model = _with_external_data(loaded, external)
    return loaded


def _parse(data: bytes, label: str) -> ModelProto:
    m = ModelProto()
    try:
        m.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxLoadError(f"{label} is not a valid ONNX model (truncated or not ONNX: "
                            f"protobuf parse failed: {e})") from None
    return m


def _check_model(loaded: LoadedOnnx) -> None:
    m = loaded.model
    # Random bytes often parse as an (almost) empty protobuf message; a real model always
    # has an IR version, a graph with nodes or outputs, and an opset.
    if m.ir_version <= 0 or not m.HasField("graph") or not (m.graph.output or m.graph.node):
        raise OnnxLoadError(f"{loaded.label} is not an ONNX model (no IR version or graph; "
                            "the file may be truncated or of another format)")
    if not m.opset_import:
        raise OnnxLoadError(f"{loaded.label}: the model declares no opset_import")


def all_graphs(g: onnx.GraphProto):
    """A graph and, recursively, every sub-graph of its nodes' attributes (If/Loop bodies)."""
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    yield from all_graphs(sub)


def _all_tensors(m: ModelProto):
    for g in all_graphs(m.graph):
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from a.tensors
    for f in m.functions:
        for n in f.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def _external_info(t: TensorProto) -> dict:
    return {e.key: e.value for e in t.external_data}


def _with_external_data(loaded: LoadedOnnx, tensors) -> ModelProto:
    """A copy of the model with every external tensor's bytes read in (checked paths only)."""
    if loaded.base_dir is None:
        names = ", ".join(repr(t.name) for t in tensors[:5])
        raise OnnxLoadError(f"{loaded.label} stores tensors ({names}) in external files, but "
                            "was not given as a path, so their folder is unknown: pass the "
                            "model's path instead")
    base = loaded.base_dir.resolve()
    resolved = {}
    for t in tensors:
        info = _external_info(t)
        loc = info.get("location", "")
        if not loc:
            raise OnnxLoadError(f"{loaded.label}: tensor {t.name!r} is external but names no "
                                "location")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or os.path.commonpath([str(base), str(target)]) != str(base):
            raise OnnxLoadError(f"{loaded.label}: tensor {t.name!r} has external data at "
                                f"{loc!r}, which is outside the model's folder {str(base)!r}; "
                                "refused")
        if not target.is_file():
            raise OnnxLoadError(f"{loaded.label}: external data file {loc!r} of tensor "
                                f"{t.name!r} is missing (looked for {str(target)!r})")
        resolved[t.name] = (target, int(info.get("offset", 0) or 0),
                            int(info["length"]) if info.get("length") else None)
    # Only now copy: the caller's proto is never changed, and reading fills the copy.
    m = ModelProto()
    m.CopyFrom(loaded.model)
    for t in _all_tensors(m):
        if not _is_external(t):
            continue
        path, offset, length = resolved[t.name]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
        if length is not None and len(data) != length:
            raise OnnxLoadError(f"{loaded.label}: external data of tensor {t.name!r} in "
                                f"{path.name!r} is truncated ({len(data)} of {length} bytes)")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
    return m
