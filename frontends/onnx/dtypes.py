"""ONNX element types and graph input types <-> IR types."""
from __future__ import annotations

import re

import numpy as np
from onnx import TensorProto, ValueInfoProto

from ...ir import TensorType
from ...ir.dims import RESERVED
from .errors import OnnxImportError
from ...errors import ModelImportError

_T = TensorProto
ONNX_TO_IR: dict[int, str] = {
    _T.FLOAT: "f32", _T.DOUBLE: "f64", _T.FLOAT16: "f16", _T.BFLOAT16: "bf16",
    _T.INT8: "i8", _T.INT16: "i16", _T.INT32: "i32", _T.INT64: "i64",
    _T.UINT8: "u8", _T.UINT16: "u16", _T.UINT32: "u32", _T.UINT64: "u64",
    _T.BOOL: "bool", _T.COMPLEX64: "c64", _T.COMPLEX128: "c128",
    _T.FLOAT8E4M3FN: "f8e4m3fn", _T.FLOAT8E4M3FNUZ: "f8e4m3fnuz", _T.FLOAT8E5M2: "f8e5m2",
    _T.FLOAT8E5M2FNUZ: "f8e5m2fnuz", _T.INT4: "i4", _T.UINT4: "u4",
    _T.FLOAT4E2M1: "f4e2m1fn",
}
for _name, _ir in [("FLOAT8E8M0", "f8e8m0fnu"), ("INT2", "i2"), ("UINT2", "u2")]:
    if hasattr(_T, _name):
        ONNX_TO_IR[getattr(_T, _name)] = _ir
IR_TO_ONNX: dict[str, int] = {v: k for k, v in ONNX_TO_IR.items()}


class UnsupportedTypeError(ModelImportError, TypeError):
    """An ONNX element type with no IR equivalent (strings, float6...)."""


def ir_dtype(elem_type: int, what: str = "") -> str:
    """The IR dtype name for an ONNX ``TensorProto.DataType`` value."""
    try:
        return ONNX_TO_IR[elem_type]
    except KeyError:
        name = _T.DataType.Name(elem_type) if elem_type in _T.DataType.values() else str(elem_type)
        where = f" ({what})" if what else ""
        raise UnsupportedTypeError(f"ONNX element type {name}{where} has no tensorsmith "
                                   "equivalent") from None


def onnx_dtype(dtype: str) -> int:
    """The ONNX ``TensorProto.DataType`` value for an IR dtype name."""
    return IR_TO_ONNX[dtype]


def sanitize_symbol(name: str) -> str:
    """A dim_param as an identifier usable as a dimension symbol ('batch size' -> 'batch_size')."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())
    s = s if s and not s[0].isdigit() else f"d_{s}"
    return f"{s}_" if s in RESERVED else s


def value_info_type(vi: ValueInfoProto, override=None, bound=None, label: str = "") -> TensorType:
    """The IR type of a graph input: dim_param (or a missing dim) becomes a symbol."""
    if not vi.type.HasField("tensor_type"):
        kind = vi.type.WhichOneof("value") or "no type"
        raise OnnxImportError(f"{label}: graph input {vi.name!r} is a {kind}; only tensors are "
                              "supported")
    tt = vi.type.tensor_type
    try:
        dtype = ir_dtype(tt.elem_type, f"graph input {vi.name!r}")
    except UnsupportedTypeError as e:
        raise OnnxImportError(f"{label}: {e}") from None
    if override is not None:
        return TensorType(tuple(override), dtype)
    if bound is not None:
        return TensorType(np.shape(bound), dtype)
    if not tt.HasField("shape"):
        raise OnnxImportError(f"{label}: graph input {vi.name!r} has no shape (unknown rank); "
                              f"pass input_shapes={{{vi.name!r}: (...)}}")
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.dim_param:
            dims.append(sanitize_symbol(d.dim_param))
        else:
            dims.append(sanitize_symbol(f"{vi.name}_dim{i}"))
    return TensorType(tuple(dims), dtype)

