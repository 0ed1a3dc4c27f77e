"""Shared pieces of type rules: broadcasting, axis checks, attribute access."""
from __future__ import annotations

from typing import Sequence

from ..graph import Attrs
from ..registry import OpTypeError
from ..dims import DimError, dim_ge, parse_dim
from ..types import Dim, TensorType, dims_equal


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """Numpy-style broadcast of shapes (symbols must match exactly or meet a 1)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif not dims_equal(dim, d):
                raise OpTypeError(f"shapes {' and '.join(_fmt(s) for s in shapes)} do not broadcast "
                                  f"(dimension {i}: {dim} vs {d})")
        out.append(dim)
    return tuple(out)


def _fmt(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def same_dtype(types: Sequence[TensorType], op: str) -> str:
    """The common element type of all inputs, or an error listing them."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise OpTypeError(f"{op}: inputs must share an element type, got "
                          f"{', '.join(str(t) for t in types)}")
    return types[0].dtype


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """An axis in [0, rank), accepting negative axes."""
    if not -rank <= axis < max(rank, 1):
        raise OpTypeError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def norm_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    out = tuple(norm_axis(a, rank) for a in axes)
    if len(set(out)) != len(out):
        raise OpTypeError(f"repeated axis in {tuple(axes)}")
    return out


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise OpTypeError(msg)


def numel(t: TensorType, symbols: dict) -> int:
    return t.numel(symbols)


def ints(attrs: Attrs, key: str) -> tuple[int, ...]:
    v = attrs[key]
    return tuple(v) if isinstance(v, tuple) else (v,)


def dim_of(v) -> Dim:
    """An attribute entry as a dim: ints stay ints (even negative), text is parsed."""
    try:
        return parse_dim(v) if isinstance(v, str) else v
    except DimError as e:
        raise OpTypeError(str(e)) from None


def require_ge(a: Dim, b: Dim, msg: str) -> None:
    """``a >= b`` must hold for every symbol value; the error says whether it fails or is unproven."""
    ok = dim_ge(a, b)
    if ok is None:
        raise OpTypeError(f"{msg} (cannot prove {a} >= {b} for all sizes)")
    if not ok:
        raise OpTypeError(msg)


def window_size(d: Dim, w: int, stride: int, lo: int, hi: int, base_dil: int, win_dil: int,
                what: str) -> Dim:
    """Output length of a strided, padded, dilated window: ``(D + lo + hi - W)//s + 1``."""
    dd = (d - 1) * base_dil + 1 if dim_ge(d, 1) else 0  # symbols are >= 1
    ww = (w - 1) * win_dil + 1
    size = dd + lo + hi - ww
    if dim_ge(size, 0) is False:
        raise OpTypeError(f"{what}: window {w} (dilated {ww}) is larger than the padded input "
                          f"{dd}+{lo}+{hi}")
    require(stride >= 1, f"{what}: stride {stride} must be positive")
    return size // stride + 1
