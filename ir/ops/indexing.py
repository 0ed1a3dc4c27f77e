"""Indexing ops: gathers and scatters driven by integer index tensors."""
from __future__ import annotations

from ..registry import AttrSpec, define_op
from ..types import dims_equal, is_int
from ._rules import norm_axis, require, same_dtype

SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _indices(t, op: str) -> None:
    require(is_int(t.dtype), f"{op}: indices must be integers, got {t}")


def _take(types, attrs):
    x, idx = types
    _indices(idx, "take")
    require(x.rank >= 1, f"take: cannot index a scalar {x}")
    axis = norm_axis(attrs["axis"], x.rank)
    return [x.with_shape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


define_op("take", _take, arity=2, traits=["indexing"], attrs=[AttrSpec("axis", "int")],
          doc="np.take(x, indices, axis): out[..., i, ...] = x[..., indices[i], ...]; the result "
              "has x's dims before axis, then indices' dims, then x's dims after axis. Indices "
              "are in [0, dim) (frontends resolve negative indices); out-of-range ones clamp.")


def _take_along_axis(types, attrs):
    x, idx = types
    _indices(idx, "take_along_axis")
    require(idx.rank == x.rank, f"take_along_axis: indices {idx} must have the rank of {x}")
    axis = norm_axis(attrs["axis"], x.rank)
    for d in range(x.rank):
        require(d == axis or dims_equal(idx.shape[d], x.shape[d]),
                f"take_along_axis: dim {d} of indices {idx} differs from {x}")
    return [x.with_shape(idx.shape)]


define_op("take_along_axis", _take_along_axis, arity=2, traits=["indexing"],
          attrs=[AttrSpec("axis", "int")],
          doc="np.take_along_axis: out[i, j, k] = x[i, indices[i, j, k], k] (for axis 1); "
              "indices match x except along axis, are in [0, dim) and clamp when out of range.")


def _gather_nd(types, attrs):
    x, idx = types
    _indices(idx, "gather_nd")
    b = attrs.get("batch_dims", 0)
    require(idx.rank >= 1 and isinstance(idx.shape[-1], int),
            f"gather_nd: indices {idx} need a static last dim")
    k = idx.shape[-1]
    require(0 <= b < min(x.rank, idx.rank) and b + k <= x.rank,
            f"gather_nd: batch_dims {b} with {k}-tuples do not fit {x} / {idx}")
    for d in range(b):
        require(dims_equal(x.shape[d], idx.shape[d]), f"gather_nd: batch dim {d} differs ({x}, {idx})")
    return [x.with_shape(idx.shape[:-1] + x.shape[b + k:])]


define_op("gather_nd", _gather_nd, arity=2, traits=["indexing"],
          attrs=[AttrSpec("batch_dims", "int", 0, "leading dims shared by x and indices")],
          doc="ONNX GatherND: the last dim of indices holds k coordinates into x's dims "
              "batch_dims..batch_dims+k; out = indices.shape[:-1] + x.shape[batch_dims+k:]. "
              "Coordinates are in [0, dim).")


def _scatter_nd(types, attrs):
    x, idx, upd = types
    _indices(idx, "scatter_nd")
    same_dtype([x, upd], "scatter_nd")
    require(attrs.get("reduction", "none") in SCATTER_REDUCTIONS,
            f"scatter_nd: reduction must be one of {SCATTER_REDUCTIONS}, got {attrs.get('reduction')!r}")
    require(idx.rank >= 1 and isinstance(idx.shape[-1], int) and idx.shape[-1] <= x.rank,
            f"scatter_nd: indices {idx} need a static last dim <= rank of {x}")
    want = idx.shape[:-1] + x.shape[idx.shape[-1]:]
    require(len(want) == upd.rank and all(dims_equal(a, b) for a, b in zip(want, upd.shape)),
            f"scatter_nd: updates {upd} must have shape [{','.join(map(str, want))}]")
    return [x]


def _scatter_flops(ins, outs, attrs, symbols):
    return 0 if attrs.get("reduction", "none") == "none" else ins[2].numel(symbols)


define_op("scatter_nd", _scatter_nd, arity=3, traits=["indexing"], flops=_scatter_flops,
          attrs=[AttrSpec("reduction", "str", "none", "none | add | mul | max | min")],
          doc="ONNX ScatterND: a copy of x where x[indices[i]] (a k-tuple, k = last dim of "
              "indices) is replaced by, or combined with, updates[i]; coordinates are in "
              "[0, dim) and out-of-range ones are dropped. Duplicate indices with "
              "reduction none write one of the updates.")


def _shape_of(types, attrs):
    (x,) = types
    start, end = attrs.get("start", 0), attrs.get("end")
    end = x.rank if end is None else end
    require(0 <= start <= end <= x.rank, f"shape_of: dims [{start}:{end}] out of range for {x}")
    require(is_int(attrs.get("dtype", "i64")), "shape_of: dtype must be an integer type")
    return [x.with_shape((end - start,)).with_dtype(attrs.get("dtype", "i64"))]


define_op("shape_of", _shape_of, traits=["shape"],
          attrs=[AttrSpec("start", "int", 0), AttrSpec("end", "int", None),
                 AttrSpec("dtype", "dtype", "i64")],
          doc="x's dims [start:end] as a 1-D integer tensor; symbolic dims are read at run "
              "time (static ones are usually folded by frontends instead).")
