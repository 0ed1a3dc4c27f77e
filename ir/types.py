"""Element types, dimensions and tensor types of the IR."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # ml_dtypes ships with jaxlib; it only adds numpy dtypes (bfloat16, float8, int4).
    import ml_dtypes as _mld
except ImportError:  # pragma: no cover - jaxlib always brings it
    _mld = None

from .dims import (Dim, DimError, DimExpr, DimTypeError, bounds, dim_ge, dim_max, dim_min,  # noqa: F401
                   dim_symbols, eval_dim, exact_div, floordiv, parse_dim)

_NUMPY_DTYPES: dict[str, object] = {
    "bool": np.bool_,
    "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
    "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
    "f16": np.float16, "f32": np.float32, "f64": np.float64,
    "c64": np.complex64, "c128": np.complex128,
}
if _mld is not None:
    for _name, _attr in [
        ("bf16", "bfloat16"), ("f8e4m3fn", "float8_e4m3fn"), ("f8e5m2", "float8_e5m2"),
        ("f8e4m3fnuz", "float8_e4m3fnuz"), ("f8e5m2fnuz", "float8_e5m2fnuz"),
        ("f8e8m0fnu", "float8_e8m0fnu"), ("f4e2m1fn", "float4_e2m1fn"),
        ("i4", "int4"), ("u4", "uint4"), ("i2", "int2"), ("u2", "uint2"),
    ]:
        if hasattr(_mld, _attr):
            _NUMPY_DTYPES[_name] = getattr(_mld, _attr)

DTYPES: tuple[str, ...] = tuple(_NUMPY_DTYPES)
_BY_NUMPY = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items()}

FLOAT_DTYPES = frozenset(d for d in DTYPES if d.startswith(("f", "bf")))
INT_DTYPES = frozenset(d for d in DTYPES if d[0] in "iu")
COMPLEX_DTYPES = frozenset({"c64", "c128"})


def is_float(dtype: str) -> bool:
    """True for real floating-point element types (including bf16 and float8)."""
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    """True for signed and unsigned integer element types."""
    return dtype in INT_DTYPES


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for an IR element type name."""
    try:
        return np.dtype(_NUMPY_DTYPES[dtype])
    except KeyError:
        raise ValueError(f"unknown element type {dtype!r}; known: {', '.join(DTYPES)}") from None


def dtype_name(dtype) -> str:
    """The IR element type name for a numpy (or jax) dtype."""
    try:
        return _BY_NUMPY[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError(f"element type {dtype!r} has no IR equivalent") from None


def itemsize_bits(dtype: str) -> int:
    """Storage bits of one element (4 for int4, 8 for float8, ...)."""
    if dtype in ("i4", "u4", "f4e2m1fn"):
        return 4
    if dtype in ("i2", "u2"):
        return 2
    if dtype == "bool":
        return 8
    return numpy_dtype(dtype).itemsize * 8


def check_dim(d) -> Dim:
    """Validate and normalise one dimension: ints, ``DimExpr``, or dim text such as ``2*N``."""
    if isinstance(d, DimExpr):
        dim = d
    elif isinstance(d, (bool, np.bool_)):
        raise DimTypeError(f"dimension must be an int or a symbolic dim, got {d!r}")
    elif isinstance(d, (int, np.integer)):
        dim = int(d)
    elif isinstance(d, str):
        dim = parse_dim(d)
    else:
        raise DimTypeError(f"dimension must be an int or a symbolic dim, got {d!r}")
    if isinstance(dim, int):
        if dim < 0:
            raise DimError(f"negative dimension {d}")
    elif bounds(dim)[1] < 0:
        raise DimError(f"dimension {dim} is negative for every size of its symbols")
    return dim


@dataclass(frozen=True)
class TensorType:
    """Shape and element type of a value; dims are ints or symbols (``N``)."""

    shape: tuple[Dim, ...]
    dtype: str

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))
        if self.dtype not in _NUMPY_DTYPES:
            numpy_dtype(self.dtype)  # raises with the list of known names

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self, symbols: dict[str, int] | None = None) -> int:
        """Element count; symbolic dims count as ``symbols[name]`` (default 1)."""
        n = 1
        for d in self.shape:
            v = d if isinstance(d, int) else eval_dim(d, symbols or {}, default=1)
            n *= max(v, 0) if isinstance(v, int) else v
        return n

    def nbytes(self, symbols: dict[str, int] | None = None) -> int:
        return (self.numel(symbols) * itemsize_bits(self.dtype) + 7) // 8

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array) -> "TensorType":
        """The type of a numpy array (or anything with shape and dtype)."""
        return TensorType(tuple(array.shape), dtype_name(array.dtype))


# --- helpers over dims (int | DimExpr; text is parsed) --------------------------------------

def dims_equal(a, b) -> bool:
    """Whether two dims are equal for all symbol values (normal forms compared, no sampling)."""
    return check_dim(a) == check_dim(b)


def dim_mul(a, b) -> Dim:
    """Product of two dims, kept symbolic when either is."""
    return check_dim(a) * check_dim(b)


def shape_numel(shape) -> Dim:
    """Product of dims, symbolic if any is."""
    n: Dim = 1
    for d in shape:
        n = n * check_dim(d)
    return n
