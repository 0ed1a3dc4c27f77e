"""Element types, dimensions and tensor types of the IR."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

import numpy as np

try:  # ml_dtypes ships with jaxlib; it only adds numpy dtypes (bfloat16, float8, int4).
    import ml_dtypes as _mld
except ImportError:  # pragma: no cover - jaxlib always brings it
    _mld = None

Dim = Union[int, str]
"""A dimension: a static size, or a symbol / symbolic expression such as ``N`` or ``2*N``."""

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


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_dim(d) -> Dim:
    """Validate and normalise one dimension (numpy ints become int)."""
    if isinstance(d, (bool, np.bool_)):
        raise TypeError(f"dimension must be an int or a symbol, got {d!r}")
    if isinstance(d, (int, np.integer)):
        if d < 0:
            raise ValueError(f"negative dimension {d}")
        return int(d)
    if isinstance(d, str) and d.strip():
        return d.replace(" ", "")
    raise TypeError(f"dimension must be an int or a symbol, got {d!r}")


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
            n *= d if isinstance(d, int) else eval_dim(d, symbols or {}, default=1)
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


# --- symbolic dimension expressions -------------------------------------------------------
# A symbolic dim is a small expression over symbols and ints: ``N``, ``2*N``, ``N*64+1``.
# They are evaluated by a tiny recursive-descent parser, never by Python's eval.

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|[-+*()%]))")


def _tokens(expr: str):
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad dimension expression {expr!r} at {expr[pos:]!r}")
        pos = m.end()
        num, name, opr = m.groups()
        out.append(("num", int(num)) if num else ("name", name) if name else ("op", opr))
    return out


def eval_dim(expr: Dim, symbols: dict, default=None):
    """Evaluate a dimension with symbols bound (values may be ints or jax symbolic dims)."""
    if isinstance(expr, int):
        return expr
    toks = _tokens(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def atom():
        nonlocal pos
        kind, val = peek()
        pos += 1
        if kind == "num":
            return val
        if kind == "name":
            if val in symbols:
                return symbols[val]
            if default is not None:
                return default
            raise KeyError(f"dimension symbol {val!r} is not bound")
        if (kind, val) == ("op", "("):
            v = add()
            if peek() != ("op", ")"):
                raise ValueError(f"unbalanced parenthesis in dimension {expr!r}")
            pos += 1
            return v
        if (kind, val) == ("op", "-"):
            return -atom()
        raise ValueError(f"bad dimension expression {expr!r}")

    def mul():
        nonlocal pos
        v = atom()
        while peek() in (("op", "*"), ("op", "//"), ("op", "%")):
            o = peek()[1]
            pos += 1
            r = atom()
            v = v * r if o == "*" else v // r if o == "//" else v % r
        return v

    def add():
        nonlocal pos
        v = mul()
        while peek() in (("op", "+"), ("op", "-")):
            o = peek()[1]
            pos += 1
            r = mul()
            v = v + r if o == "+" else v - r
        return v

    result = add()
    if pos != len(toks):
        raise ValueError(f"bad dimension expression {expr!r}")
    return result


def dim_symbols(expr: Dim) -> set[str]:
    """The symbol names a dimension mentions."""
    if isinstance(expr, int):
        return set()
    return {v for k, v in _tokens(expr) if k == "name"}


def dims_equal(a: Dim, b: Dim) -> bool:
    """Structural equality of two dims (symbolic expressions compared after normalisation)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, int) or isinstance(b, int):
        return False
    if a == b:
        return True
    # Compare by evaluating at a few symbol assignments: cheap and robust for the
    # polynomial expressions that arise (products and sums of symbols and ints).
    syms = dim_symbols(a) | dim_symbols(b)
    for seed in (7, 13, 101):
        env = {s: seed + 3 * i for i, s in enumerate(sorted(syms))}
        if eval_dim(a, env) != eval_dim(b, env):
            return False
    return True


def dim_mul(a: Dim, b: Dim) -> Dim:
    """Product of two dims, kept symbolic when either is."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    if a == 0 or b == 0:
        return 0
    return f"{_paren(a)}*{_paren(b)}"


def _paren(d: Dim) -> str:
    s = str(d)
    return f"({s})" if any(c in s for c in "+-") else s


def shape_numel(shape) -> Dim:
    """Product of dims, symbolic if any is."""
    n: Dim = 1
    for d in shape:
        n = dim_mul(n, d)
    return n
