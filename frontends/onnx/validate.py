"""Validation of an ONNX model before import: names (SSA), dims, attributes, types.

What onnxruntime refuses on load, tensorsmith refuses too, naming the value, node and rule,
instead of picking one reading of an invalid graph. The name and attribute checks are our
own (one pass over the nodes, sets only, fast on large models); onnx's strict type
inference adds the per-op type rules.
"""
from __future__ import annotations

import difflib

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto

from .errors import OnnxImportError
from .loader import (MAX_ELEMENTS, MAX_NESTING, OnnxLoadError, all_graphs, node_owners,
                     tensor_slots)
from .registry import norm_domain

_INFERENCE_MAX_BYTES = (1 << 31) - 1  # protobuf's limit: even the skeleton must fit
# onnxruntime merges a declared shape that disagrees with the inferred one leniently; so do we.
# A value whose type inference could not find is missing information, not a wrong type (the
# cause, if it is one, is reported on its own line).
_TOLERATED = ("Inferred shape and existing shape differ", "expected to have type but instead is null")

_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())

_KIND_FIELDS = [  # how an attribute without a type says what it is (IR version 1 files)
    ("f", AttributeProto.FLOAT), ("i", AttributeProto.INT), ("s", AttributeProto.STRING),
    ("t", AttributeProto.TENSOR), ("g", AttributeProto.GRAPH),
    ("sparse_tensor", AttributeProto.SPARSE_TENSOR), ("tp", AttributeProto.TYPE_PROTO),
]


def validate_model(model: ModelProto, label: str) -> None:
    """Refuse a model that onnxruntime would refuse on load (an ``OnnxImportError`` or
    ``OnnxLoadError`` naming the node or value and what is wrong)."""
    _check_text(model, label)
    opsets = _opsets(model.opset_import, label)
    _check_graph(model.graph, [], label, "", 0)
    local = {(norm_domain(f.domain), f.name): f for f in model.functions}
    for f in model.functions:
        f_opsets = {**opsets, **_opsets(f.opset_import, label)}
        _check_function(f, label)
        _check_attributes(f.node, f_opsets, local, label, f"function {f.name!r}/",
                          model.ir_version)
    for g in all_graphs(model.graph, label):
        _check_attributes(g.node, opsets, local, label, "", model.ir_version)
    for t, what in tensor_slots(model, label):
        if t.data_type == onnx.TensorProto.UNDEFINED or t.data_type not in _DATA_TYPES:
            raise OnnxImportError(f"{label}: {what} has no valid data type ({t.data_type})")
    _check_types(model, label)


def _opsets(entries, label: str) -> dict[str, int]:
    out = {}
    newest = onnx.defs.onnx_opset_version()
    for o in entries:
        d = norm_domain(o.domain)
        if o.version < 1 or (d == "" and o.version > newest):
            raise OnnxImportError(f"{label}: opset_import gives domain {o.domain or 'ai.onnx'!r} "
                                  f"version {o.version}; valid versions are 1..{newest}")
        out[d] = int(o.version)
    return out


# --- text ------------------------------------------------------------------------------------
def _check_text(model: ModelProto, label: str) -> None:
    """Every name is text: protobuf hands back invalid UTF-8 in a name as bytes."""
    def names(owner) -> list:  # flat lists: this runs over every name of large models
        out = [owner.name]
        if isinstance(owner, GraphProto):
            infos = [*owner.input, *owner.output, *owner.value_info]
            out += [vi.name for vi in infos]
            out += [d.dim_param for vi in infos if vi.type.HasField("tensor_type")
                    for d in vi.type.tensor_type.shape.dim]
            out += [t.name for t in owner.initializer]
            out += [sp.values.name for sp in owner.sparse_initializer]
        else:  # a function: its inputs, outputs and attributes are plain names
            out += [owner.domain, *owner.input, *owner.output, *owner.attribute]
        for n in owner.node:
            out += [n.name, n.op_type, n.domain, *n.input, *n.output]
            out += [x for a in n.attribute for x in (a.name, a.ref_attr_name)]
        return out

    for o in list(model.opset_import) + [o for f in model.functions for o in f.opset_import]:
        _text(o.domain, "an opset_import domain", label)
    for owner in node_owners(model, label):  # graphs, sub-graphs, functions
        bad = [x for x in names(owner) if type(x) is not str]
        if bad:
            kind = "graph" if isinstance(owner, GraphProto) else "function"
            _text(bad[0], f"a name in {kind} {owner.name!r}", label)


def _text(x, what: str, label: str) -> None:
    if not isinstance(x, str):
        raise OnnxLoadError(f"{label}: {what} is not valid UTF-8 text ({bytes(x)[:60]!r}); the "
                            "file is damaged")


# --- names and dims --------------------------------------------------------------------------
def _node_label(node: NodeProto, index: int, where: str) -> str:
    name = repr(node.name) if node.name else f"#{index}"
    return f"node {where}{name} ({node.op_type})"


def _check_graph(g: GraphProto, outer: list[set[str]], label: str, where: str, depth: int) -> None:
    """SSA and dims of one graph; ``outer`` are the names visible from enclosing graphs."""
    if depth > MAX_NESTING:
        raise OnnxLoadError(f"{label}: sub-graphs are nested more than {MAX_NESTING} levels deep "
                            f"(at {where!r}); refused")
    if not g.name:  # the checker and onnxruntime require it
        raise OnnxImportError(f"{label}: {where or 'the main graph'} has no name")
    scope: set[str] = set()

    def visible(name: str) -> bool:
        return name in scope or any(name in s for s in outer)

    inputs = set()
    for vi in g.input:
        if vi.name in inputs:
            raise OnnxImportError(f"{label}: {where}graph input {vi.name!r} is declared twice")
        inputs.add(vi.name)
        _check_dims(vi, label, where, "graph input", is_input=True)
    for vi in list(g.output) + list(g.value_info):
        _check_dims(vi, label, where, "value", is_input=False)
    inits = set()
    for name, dims in [(t.name, t.dims) for t in g.initializer] + \
                      [(s.values.name, s.dims) for s in g.sparse_initializer]:
        if not name:
            raise OnnxImportError(f"{label}: {where}an initializer has no name")
        if name in inits:
            raise OnnxImportError(f"{label}: {where}initializer {name!r} is defined twice "
                                  "(two initializers with one name)")
        inits.add(name)
        _check_tensor_dims(name, dims, label, where)
    scope |= inputs | inits
    for i, n in enumerate(g.node):
        for x in n.input:
            if x and not visible(x):
                raise OnnxImportError(
                    f"{label}: {_node_label(n, i, where)} reads {x!r}, which is not defined "
                    "before it (not a graph input, initializer or earlier node's output)")
        for a in n.attribute:
            subs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            for s in subs:
                _check_graph(s, outer + [scope], label,
                             f"{where}{n.name or n.op_type}/{a.name}/", depth + 1)
        for o in n.output:
            if not o:
                continue
            if visible(o):
                what = ("a graph input" if o in inputs else "an initializer" if o in inits
                        else "an outer value" if o not in scope else "another node's output")
                raise OnnxImportError(f"{label}: {_node_label(n, i, where)} writes {o!r}, which is "
                                      f"already {what}: a graph must define each name once")
            scope.add(o)
    for vi in g.output:
        if not visible(vi.name):
            raise OnnxImportError(f"{label}: {where}graph output {vi.name!r} is not produced by "
                                  "any node, input or initializer")


def _check_function(f: onnx.FunctionProto, label: str) -> None:
    scope = set(f.input)
    for i, n in enumerate(f.node):
        for x in n.input:
            if x and x not in scope:
                raise OnnxImportError(f"{label}: {_node_label(n, i, f'function {f.name!r}/')} "
                                      f"reads {x!r}, which is not defined before it")
        for o in n.output:
            if o and o in scope:
                raise OnnxImportError(f"{label}: {_node_label(n, i, f'function {f.name!r}/')} "
                                      f"writes {o!r}, which is already defined")
            scope.add(o)


def _check_dims(vi, label: str, where: str, what: str, is_input: bool) -> None:
    if not vi.type.HasField("tensor_type"):
        return
    elem = vi.type.tensor_type.elem_type
    # as onnxruntime: a tensor type names its element type (an output of unknown type has no
    # type at all); an unknown code is damage
    if elem == onnx.TensorProto.UNDEFINED or elem not in _DATA_TYPES:
        raise OnnxImportError(f"{label}: {where}{what} {vi.name!r} has no valid element type "
                              f"({elem})")
    if not vi.type.tensor_type.HasField("shape"):
        return
    numel = 1
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise OnnxImportError(f"{label}: {where}{what} {vi.name!r} has a negative dim "
                                      f"({d.dim_value}); refused")
            numel *= d.dim_value
    if is_input and numel > MAX_ELEMENTS:
        raise OnnxImportError(f"{label}: {where}{what} {vi.name!r} declares {numel} elements "
                              "(more than 2**40); refused")


def _check_tensor_dims(name: str, dims, label: str, where: str) -> None:
    numel = 1
    for d in dims:
        if d < 0:
            raise OnnxImportError(f"{label}: {where}initializer {name!r} has a negative dim "
                                  f"({list(dims)}); refused")
        numel *= d
    if numel > MAX_ELEMENTS:
        raise OnnxImportError(f"{label}: {where}initializer {name!r} declares {list(dims)}, more "
                              "than 2**40 elements; refused")


# --- attributes ------------------------------------------------------------------------------
def _attr_kind(a: AttributeProto) -> int:
    if a.type != AttributeProto.UNDEFINED:
        return a.type
    kinds = [k for field, k in _KIND_FIELDS if a.HasField(field)]
    for field, k in [("floats", AttributeProto.FLOATS), ("ints", AttributeProto.INTS),
                     ("strings", AttributeProto.STRINGS), ("tensors", AttributeProto.TENSORS),
                     ("graphs", AttributeProto.GRAPHS)]:
        if len(getattr(a, field)):
            kinds.append(k)
    return kinds[0] if len(kinds) == 1 else AttributeProto.UNDEFINED


def _kind_name(k: int) -> str:
    try:
        return AttributeProto.AttributeType.Name(k)
    except ValueError:
        return str(k)


def _check_attributes(nodes, opsets: dict[str, int], local: dict, label: str, where: str,
                      ir_version: int) -> None:
    for i, n in enumerate(nodes):
        domain = norm_domain(n.domain)
        seen = set()
        for a in n.attribute:
            # IR version 1 files had no attribute type; since then it is required
            if a.type == AttributeProto.UNDEFINED and ir_version >= 2 and not a.ref_attr_name:
                raise OnnxImportError(f"{label}: {_node_label(n, i, where)} attribute {a.name!r} "
                                      "has no type (UNDEFINED)")
            if a.name in seen:
                raise OnnxImportError(f"{label}: {_node_label(n, i, where)} has attribute "
                                      f"{a.name!r} twice")
            seen.add(a.name)
        fn = local.get((domain, n.op_type))
        if fn is not None:
            valid = set(fn.attribute) | {a.name for a in getattr(fn, "attribute_proto", ())}
            for a in n.attribute:
                if a.name not in valid:
                    _unknown_attribute(n, i, where, a.name, valid, label, f"function {fn.name!r}")
            continue
        if domain not in opsets:
            continue  # the converter reports the missing opset
        try:
            schema = onnx.defs.get_schema(n.op_type, opsets[domain], domain)
        except Exception:  # no schema at this opset (custom op, or too old): nothing to check
            continue
        spec = schema.attributes
        for a in n.attribute:
            if a.name not in spec:
                _unknown_attribute(n, i, where, a.name, spec, label, f"opset {opsets[domain]}")
            if a.ref_attr_name:
                continue  # inside a function body: the caller's attribute is checked there
            want, got = int(spec[a.name].type), _attr_kind(a)
            if got != want:
                raise OnnxImportError(
                    f"{label}: {_node_label(n, i, where)} attribute {a.name!r} is "
                    f"{_kind_name(got)}, but {n.op_type} (opset {opsets[domain]}) takes "
                    f"{_kind_name(want)}")
        missing = [k for k, v in spec.items() if v.required and k not in seen]
        if missing:
            raise OnnxImportError(f"{label}: {_node_label(n, i, where)} lacks required "
                                  f"attribute(s) {', '.join(map(repr, sorted(missing)))}")


def _unknown_attribute(n: NodeProto, i: int, where: str, name: str, valid, label: str,
                       at: str) -> None:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    names = ", ".join(sorted(valid)) or "none"
    raise OnnxImportError(f"{label}: {_node_label(n, i, where)} has attribute {name!r}, which "
                          f"{n.op_type} ({at}) does not take{hint} (valid: {names})")


# --- types -----------------------------------------------------------------------------------
def _check_types(model: ModelProto, label: str) -> None:
    """onnx's strict type inference: an input type the op does not accept, a missing input."""
    model = _skeleton(model)
    if model.ByteSize() > _INFERENCE_MAX_BYTES:
        return  # huge inline Constants; names, dims and attributes are still checked
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:  # InferenceError, ValidationError, SchemaError: all are the model's
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        lines[0] = lines[0].replace("[ShapeInferenceError] Inference error(s): ", "")
        # "(op_type:A): (op_type:B): ..." is inside A's function body as onnx expands it,
        # where onnx's inference has gaps onnxruntime does not share; the converter checks those
        bad = [ln for ln in lines if not any(t in ln for t in _TOLERATED)
               and ln.count("(op_type:") < 2]
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise OnnxImportError(f"{label}: the model fails ONNX type checking: "
                                  + "; ".join(bad[:3]) + more) from None


def _skeleton(model: ModelProto) -> ModelProto:
    """The model with its initializers turned into typed graph inputs.

    Type checking needs their types, not their bytes. Without values, onnx's inference
    cannot follow hostile data (a negative Resize scale makes a negative dim, on which its
    Slice rule aborts the process) and no weights are copied.
    """
    m = ModelProto(ir_version=max(model.ir_version, 4))  # IR 4: inputs need no initializer
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    src, g = model.graph, m.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info"):
        getattr(g, field).extend(getattr(src, field))
    declared = {vi.name for vi in src.input}
    for name, dtype, dims in [(t.name, t.data_type, t.dims) for t in src.initializer] + \
            [(s.values.name, s.values.data_type, s.dims) for s in src.sparse_initializer]:
        if name not in declared:
            declared.add(name)
            g.input.append(onnx.helper.make_tensor_value_info(name, dtype, list(dims)))
    return m
