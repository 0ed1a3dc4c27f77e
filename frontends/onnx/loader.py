"""Reading and validating ONNX models: paths, bytes or ModelProto; external data kept in its folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, ModelProto, TensorProto
from ...errors import LoadError

MAX_NESTING = 64          # sub-graphs inside sub-graphs: deeper is refused, never a RecursionError
MAX_ELEMENTS = 1 << 40    # a declared tensor bigger than this is refused before anything is allocated
_EXTERNAL_KEYS = ("location", "offset", "length", "checksum", "basepath")  # the spec's, and onnx's


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
    from .validate import validate_model  # validate imports this module

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
    # Validate before reading external data: a bad graph is refused without reading gigabytes.
    validate_model(loaded.model, loaded.label)
    if any(_is_external(t) for t, _ in tensor_slots(loaded.model)):
        loaded.model = _with_external_data(loaded)
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
    if m.ir_version > onnx.IR_VERSION:
        raise OnnxLoadError(f"{loaded.label} declares ONNX IR version {m.ir_version}; the "
                            f"newest this onnx package knows is {onnx.IR_VERSION}")
    if not m.opset_import:
        raise OnnxLoadError(f"{loaded.label}: the model declares no opset_import")


def _sub_graphs(node: onnx.NodeProto):
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH or a.HasField("g"):
            yield a.g
        yield from a.graphs


def all_graphs(g: onnx.GraphProto, label: str = "the model"):
    """A graph and every sub-graph of its nodes' attributes (If/Loop bodies), outer first.

    Iterative, with a depth limit: a hostile nesting gives an error, not a RecursionError.
    """
    stack = [(g, 0)]
    while stack:
        graph, depth = stack.pop()
        if depth > MAX_NESTING:
            raise OnnxLoadError(f"{label}: sub-graphs are nested more than {MAX_NESTING} levels "
                                f"deep (at graph {graph.name!r}); refused")
        yield graph
        for n in reversed(graph.node):
            stack.extend((s, depth + 1) for s in reversed(list(_sub_graphs(n))))


def all_node_lists(model: ModelProto, label: str = "the model"):
    """Every node list of the model: graphs, sub-graphs, local functions and their sub-graphs."""
    for g in all_graphs(model.graph, label):
        yield g.node
    for f in model.functions:
        yield f.node
        for n in f.node:
            for s in _sub_graphs(n):
                for g in all_graphs(s, label):
                    yield g.node


def tensor_slots(model: ModelProto, label: str = "the model"):
    """``(tensor, what)`` for every TensorProto stored in the model, each object once.

    ``what`` names it for errors (``initializer 'w'``, ``attribute 'value' of node 'c1'``).
    Sparse tensors give their values and indices. Walking objects, not names, is what keeps
    two tensors of one name (two unnamed Constants) apart.
    """
    for nodes_owner in node_owners(model, label):
        for t in getattr(nodes_owner, "initializer", ()):
            yield t, f"initializer {t.name!r}"
        for sp in getattr(nodes_owner, "sparse_initializer", ()):
            yield from _sparse_slots(sp, f"sparse initializer {sp.values.name!r}")
        for n in nodes_owner.node:
            for a in n.attribute:
                yield from _attribute_slots(a, f"attribute {a.name!r} of node {n.name or n.op_type!r}")
    for f in model.functions:
        for a in getattr(f, "attribute_proto", ()):
            yield from _attribute_slots(a, f"default of attribute {a.name!r} of function {f.name!r}")


def node_owners(model: ModelProto, label: str = "the model"):
    """Everything that holds nodes: graphs, sub-graphs, local functions and their sub-graphs."""
    yield from all_graphs(model.graph, label)
    for f in model.functions:
        yield f
        for n in f.node:
            for s in _sub_graphs(n):
                yield from all_graphs(s, label)


def _attribute_slots(a: AttributeProto, what: str):
    if a.HasField("t"):
        yield a.t, what
    for t in a.tensors:
        yield t, what
    if a.HasField("sparse_tensor"):
        yield from _sparse_slots(a.sparse_tensor, what)
    for sp in a.sparse_tensors:
        yield from _sparse_slots(sp, what)


def _sparse_slots(sp, what: str):
    yield sp.values, f"{what} (sparse values)"
    yield sp.indices, f"{what} (sparse indices)"


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def declared_nbytes(t: TensorProto, what: str, label: str) -> int:
    """Bytes the tensor's dims and data type call for; absurd or negative dims are refused."""
    numel = 1
    for d in t.dims:
        if d < 0:
            raise OnnxLoadError(f"{label}: {what} has a negative dim ({list(t.dims)}); refused")
        numel *= d
        if numel > MAX_ELEMENTS:
            raise OnnxLoadError(f"{label}: {what} declares {list(t.dims)}, more than 2**40 "
                                "elements; refused")
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise OnnxLoadError(f"{label}: {what} is external {TensorProto.DataType.Name(t.data_type)} "
                            "data, which cannot be read")
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    except (KeyError, ValueError, TypeError):
        raise OnnxLoadError(f"{label}: {what} has unknown data type {t.data_type}") from None
    name = np_dtype.name
    if name.startswith(("int4", "uint4", "float4")):  # two elements a byte
        return (numel + 1) // 2
    if name.startswith(("int2", "uint2")):
        return (numel + 3) // 4
    return numel * np_dtype.itemsize


def read_external(t: TensorProto, base: Path, what: str, label: str) -> bytes:
    """The one checked read of external data: path inside ``base``, range inside the file,
    length equal to what the tensor's shape and dtype call for (checked before reading)."""
    info = {}
    for e in t.external_data:
        if not isinstance(e.key, str) or not isinstance(e.value, str):
            raise OnnxLoadError(f"{label}: {what} has external data info that is not valid UTF-8 "
                                "text; the file is damaged")
        if e.key not in _EXTERNAL_KEYS or e.key in info or not e.value:
            why = ("is given twice" if e.key in info else "has no value" if e.key in _EXTERNAL_KEYS
                   else f"is not one of {', '.join(_EXTERNAL_KEYS)}")
            raise OnnxLoadError(f"{label}: {what} has external data key {e.key!r}, which {why}")
        info[e.key] = e.value
    loc = info.get("location", "")
    if not loc:
        raise OnnxLoadError(f"{label}: {what} is external but names no location")
    if "\x00" in loc or os.path.isabs(loc) or loc.startswith(("/", "\\")):
        raise OnnxLoadError(f"{label}: {what} has external data at {loc!r}, which is outside "
                            f"the model's folder {str(base)!r}; refused")
    target = (base / loc).resolve()  # resolves symlinks too: a link out of the folder is out
    if os.path.commonpath([str(base), str(target)]) != str(base):
        raise OnnxLoadError(f"{label}: {what} has external data at {loc!r}, which is outside "
                            f"the model's folder {str(base)!r}; refused")
    if not target.is_file():
        raise OnnxLoadError(f"{label}: external data file {loc!r} of {what} is missing "
                            f"(looked for {str(target)!r})")
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise OnnxLoadError(f"{label}: {what} has a non-integer external offset or length "
                            f"({info.get('offset')!r}, {info.get('length')!r})") from None
    want = declared_nbytes(t, what, label)
    size = target.stat().st_size
    if offset < 0 or (length is not None and length < 0):
        raise OnnxLoadError(f"{label}: {what} has a negative external offset or length")
    if length is None:
        length = size - offset  # the spec: to the end of the file
    if length != want:
        raise OnnxLoadError(f"{label}: {what} declares {list(t.dims)} "
                            f"{TensorProto.DataType.Name(t.data_type)} ({want} bytes) but its "
                            f"external data in {loc!r} is {length} bytes; refused")
    if offset + length > size:
        raise OnnxLoadError(f"{label}: external data of {what} in {loc!r} is truncated (bytes "
                            f"{offset}..{offset + length} asked, the file has {size})")
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OnnxLoadError(f"{label}: external data of {what} in {loc!r} is truncated "
                            f"({len(data)} of {length} bytes)")
    return data


def _with_external_data(loaded: LoadedOnnx) -> ModelProto:
    """A copy of the model with every external tensor's bytes read in (checked paths only)."""
    if loaded.base_dir is None:
        names = ", ".join(what for t, what in tensor_slots(loaded.model) if _is_external(t))
        raise OnnxLoadError(f"{loaded.label} stores tensors ({names[:300]}) in external files, "
                            "but was not given as a path, so their folder is unknown: pass the "
                            "model's path instead")
    base = loaded.base_dir.resolve()
    # Copy first: the caller's proto is never changed; each tensor object is filled in place.
    m = ModelProto()
    m.CopyFrom(loaded.model)
    for t, what in tensor_slots(m, loaded.label):
        if _is_external(t):
            t.raw_data = read_external(t, base, what, loaded.label)
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    return m
