"""Torch dtypes, symbolic sizes and tensors as the IR has them."""
from __future__ import annotations

import numpy as np

from ...ir import TensorType, numpy_dtype
from ...ir.dims import DimExpr, floordiv, mod
from .errors import Unsupported

_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
           "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8",
           "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool",
           "complex64": "c64", "complex128": "c128", "float8_e4m3fn": "f8e4m3fn",
           "float8_e5m2": "f8e5m2"}


def ir_dtype(dtype) -> str:
    """The IR element type of a torch dtype (``torch.float32`` -> ``f32``)."""
    name = str(dtype).removeprefix("torch.")
    try:
        return _DTYPES[name]
    except KeyError:
        raise Unsupported(f"torch dtype {dtype} has no IR element type") from None


def torch_dtype(ir: str):
    """The torch dtype of an IR element type."""
    import torch
    for name, short in _DTYPES.items():
        if short == ir:
            return getattr(torch, name)
    raise Unsupported(f"element type {ir} has no torch dtype")


def to_numpy(t) -> np.ndarray:
    """A numpy copy of a torch tensor (bf16 and float8 through ml_dtypes); never a view."""
    import torch
    t = t.detach().cpu()
    dtype = ir_dtype(t.dtype)
    if dtype in ("bf16", "f8e4m3fn", "f8e5m2"):
        bits = {2: torch.int16, 1: torch.int8}[t.element_size()]
        return t.contiguous().view(bits).numpy().copy().view(numpy_dtype(dtype))
    return np.array(t.numpy(), copy=True)


def sym_dim(expr, names: dict[str, str]):
    """An IR dim (int or DimExpr) for a sympy size expression of torch's shape environment."""
    import sympy
    if isinstance(expr, (int, np.integer)):
        return int(expr)
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return DimExpr.symbol(names.get(str(expr), str(expr)))
    args = [sym_dim(a, names) for a in expr.args]
    if isinstance(expr, sympy.Add):
        out = 0
        for a in args:
            out = out + a
        return out
    if isinstance(expr, sympy.Mul):
        out = 1
        for a in args:
            out = out * a
        return out
    kind = type(expr).__name__
    if kind in ("FloorDiv", "CleanDiv") and len(args) == 2:
        return floordiv(args[0], args[1])
    if kind in ("Mod", "PythonMod") and len(args) == 2:
        return mod(args[0], args[1])
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) > 0:
        out = 1
        for _ in range(int(expr.exp)):
            out = out * args[0]
        return out
    raise Unsupported(f"symbolic size {expr} ({kind}) has no IR dim expression")


def size_dim(s, names: dict[str, str]):
    """An IR dim for a torch size: an int or a SymInt."""
    if isinstance(s, int):
        return s
    node = getattr(s, "node", None)
    if node is not None and hasattr(node, "expr"):
        return sym_dim(node.expr, names)
    return int(s)


def tensor_type(val, names: dict[str, str]) -> TensorType:
    """The IR type of a (fake) tensor."""
    return TensorType(tuple(size_dim(s, names) for s in val.shape), ir_dtype(val.dtype))
