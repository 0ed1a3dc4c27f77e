"""ONNX functions: model-local FunctionProtos, and ops whose schema defines a function body.

Both become composites: a ``composite`` IR node whose region is the body converted node by
node. Attribute references (``ref_attr_name``) are bound to the calling node's attributes.
"""
from __future__ import annotations

from typing import Sequence

import onnx
from onnx import FunctionProto, NodeProto, TypeProto, defs

from .registry import norm_domain


def bind_attributes(body: Sequence[NodeProto], call: NodeProto, fn: FunctionProto,
                    defaults: dict | None = None) -> list[NodeProto]:
    """Copies of ``body`` with every ``ref_attr_name`` attribute replaced by the caller's value
    (or the function's / schema's default; dropped when none exists, as the spec says)."""
    given = {a.name: a for a in call.attribute}
    defaults = {**(defaults or {}), **{a.name: a for a in getattr(fn, "attribute_proto", ())}}
    out = []
    for n in body:
        if not any(a.ref_attr_name for a in n.attribute):
            out.append(n)
            continue
        m = NodeProto()
        m.CopyFrom(n)
        del m.attribute[:]
        for a in n.attribute:
            if not a.ref_attr_name:
                m.attribute.append(a)
                continue
            src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
            if src is None:
                continue
            b = onnx.AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            m.attribute.append(b)
        out.append(m)
    return out


def schema_function(node: NodeProto, opset: int, input_types: Sequence[TypeProto | None]) -> FunctionProto | None:
    """The function body the ONNX schema of ``node``'s op defines at ``opset``, if any."""
    try:
        schema = defs.get_schema(node.op_type, opset, norm_domain(node.domain))
    except Exception:  # SchemaError: no such op at this opset
        return None
    data = None
    try:
        if schema.has_function:
            versions = [v for v in schema.function_opset_versions if v <= opset]
            if versions:
                data = schema.get_function_with_opset_version(max(versions))
        if data is None and schema.has_context_dependent_function:
            versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
            # an omitted optional input ('') is passed as an empty type, as onnx does itself
            if versions and all(t is not None or not name for t, name in zip(input_types, node.input)):
                data = schema.get_context_dependent_function_with_opset_version(
                    max(versions), node.SerializeToString(),
                    [(t or TypeProto()).SerializeToString() for t in input_types])
    except Exception:  # the builder rejected this node (unsupported attribute combination)
        return None
    if not data:
        return None
    fn = FunctionProto()
    fn.ParseFromString(data)
    if not fn.opset_import:
        fn.opset_import.append(onnx.helper.make_opsetid("", opset))
    return fn


def schema_defaults(node: NodeProto, opset: int) -> dict:
    """Attribute name -> default AttributeProto declared by the op's schema."""
    try:
        schema = defs.get_schema(node.op_type, opset, norm_domain(node.domain))
    except Exception:
        return {}
    out = {}
    for name, a in schema.attributes.items():
        d = a.default_value
        if d is not None and d.type != onnx.AttributeProto.UNDEFINED:
            out[name] = d
    return out
