"""Ops that move data without arithmetic: reshape, transpose, broadcast, slice, concat, pad..."""
from __future__ import annotations

from ..registry import AttrSpec, define_op
from ..dims import dim_ge, dim_max
from ..types import TensorType, dims_equal, shape_numel
from ._rules import dim_of, norm_axes, norm_axis, require, require_ge, same_dtype

SHAPE = ["shape"]


def _reshape(types, attrs):
    (x,), shape = types, tuple(dim_of(d) for d in attrs["shape"])
    require(all(not isinstance(d, int) or d >= 0 for d in shape),
            f"reshape: target shape {list(attrs['shape'])} has a negative dim (resolve -1 before "
            "building IR)")
    have, want = shape_numel(x.shape), shape_numel(shape)
    require(dims_equal(have, want),
            f"reshape: cannot reshape {x} ({have} elements) to [{','.join(map(str, shape))}] "
            f"({want} elements)")
    return [x.with_shape(shape)]


define_op("reshape", _reshape, traits=SHAPE, attrs=[AttrSpec("shape", "ints", doc="new shape (no -1)")],
          doc="Same elements in row-major order, new shape.")


def _transpose(types, attrs):
    (x,), perm = types, attrs["permutation"]
    require(sorted(perm) == list(range(x.rank)),
            f"transpose: permutation {perm} is not a permutation of 0..{x.rank - 1}")
    return [x.with_shape(x.shape[p] for p in perm)]


define_op("transpose", _transpose, traits=SHAPE, attrs=[AttrSpec("permutation", "ints")],
          doc="Permute dimensions: out.shape[i] = x.shape[permutation[i]].")


def _broadcast_in_dim(types, attrs):
    (x,), shape, dims = types, attrs["shape"], attrs["broadcast_dimensions"]
    require(len(dims) == x.rank, f"broadcast_in_dim: {len(dims)} broadcast_dimensions for {x}")
    for i, d in enumerate(dims):
        require(0 <= d < len(shape), f"broadcast_in_dim: dimension {d} out of range for {list(shape)}")
        require(x.shape[i] == 1 or dims_equal(x.shape[i], shape[d]),
                f"broadcast_in_dim: operand dim {i} ({x.shape[i]}) cannot broadcast to {shape[d]}")
    require(list(dims) == sorted(dims), f"broadcast_in_dim: broadcast_dimensions {dims} not increasing")
    return [x.with_shape(shape)]


define_op("broadcast_in_dim", _broadcast_in_dim, traits=SHAPE,
          attrs=[AttrSpec("shape", "ints"), AttrSpec("broadcast_dimensions", "ints")],
          doc="Broadcast x to shape; operand dim i maps to output dim broadcast_dimensions[i].")


def _slice(types, attrs):
    (x,) = types
    start, limit = attrs["start"], attrs["limit"]
    strides = attrs.get("strides") or (1,) * x.rank
    require(len(start) == len(limit) == len(strides) == x.rank,
            f"slice: start/limit/strides must each have {x.rank} entries for {x}")
    out = []
    for i, (s, l, st, d) in enumerate(zip(start, limit, strides, x.shape)):
        s, l = dim_of(s), dim_of(l)
        require(isinstance(st, int) and st >= 1, f"slice: dimension {i}: stride {st} must be positive")
        what = f"slice: dimension {i}: [{s}:{l}:{st}] is not within 0..{d}"
        require_ge(s, 0, what)
        require_ge(l, s, what)
        require_ge(d, l, what)
        out.append((l - s + st - 1) // st)
    return [x.with_shape(out)]


define_op("slice", _slice, traits=SHAPE,
          attrs=[AttrSpec("start", "ints"), AttrSpec("limit", "ints"), AttrSpec("strides", "ints", None)],
          doc="Static strided slice x[start:limit:strides] (bounds already clamped, positive strides).")


def _dynamic_slice(types, attrs):
    x, *starts = types
    sizes = attrs["sizes"]
    require(len(starts) == x.rank == len(sizes),
            f"dynamic_slice: need {x.rank} start indices and sizes for {x}")
    for i, (n, d) in enumerate(zip(sizes, x.shape)):
        n = dim_of(n)
        require(dim_ge(n, 0) is not False and dim_ge(d, n) is not False,
                f"dynamic_slice: size {n} of dimension {i} does not fit in {d} ({x})")
    return [x.with_shape(sizes)]


define_op("dynamic_slice", _dynamic_slice, arity=(1, None), traits=SHAPE,
          attrs=[AttrSpec("sizes", "ints")],
          doc="Slice of static sizes at run-time start indices (clamped into range).")


def _dynamic_update_slice(types, attrs):
    x, upd, *starts = types
    require(len(starts) == x.rank and upd.rank == x.rank,
            f"dynamic_update_slice: need {x.rank} start indices and an update of rank {x.rank}")
    same_dtype([x, upd], "dynamic_update_slice")
    return [x]


define_op("dynamic_update_slice", _dynamic_update_slice, arity=(2, None), traits=SHAPE,
          doc="x with update written at run-time start indices.")


def _concatenate(types, attrs):
    dtype = same_dtype(types, "concatenate")
    rank = types[0].rank
    axis = norm_axis(attrs["axis"], rank)
    total = 0
    for t in types:
        require(t.rank == rank, f"concatenate: ranks differ ({', '.join(map(str, types))})")
        for i in range(rank):
            if i != axis:
                require(dims_equal(t.shape[i], types[0].shape[i]),
                        f"concatenate: dim {i} differs ({', '.join(map(str, types))})")
        total = total + t.shape[axis]
    shape = list(types[0].shape)
    shape[axis] = total
    return [TensorType(tuple(shape), dtype)]


define_op("concatenate", _concatenate, arity=(1, None), traits=SHAPE, attrs=[AttrSpec("axis", "int")],
          doc="Join inputs along axis.")


def _pad(types, attrs):
    x, pv = types
    lo, hi = attrs["low"], attrs["high"]
    interior = attrs.get("interior") or (0,) * x.rank
    require(pv.rank == 0, f"pad: padding value must be a scalar, got {pv}")
    same_dtype([x, pv], "pad")
    require(len(lo) == len(hi) == len(interior) == x.rank, f"pad: need {x.rank} entries per config")
    out = []
    for k, (d, l, h, i) in enumerate(zip(x.shape, lo, hi, interior)):
        require(i >= 0, f"pad: negative interior padding {i} in dimension {k}")
        n = l + h + d + dim_max(d - 1, 0) * i
        require(dim_ge(n, 0) is not False, f"pad: dimension {k} of {x} becomes negative "
                                           f"({n}) with low={lo} high={hi}")
        out.append(n)
    return [x.with_shape(out)]


define_op("pad", _pad, arity=2, traits=SHAPE,
          attrs=[AttrSpec("low", "ints"), AttrSpec("high", "ints"), AttrSpec("interior", "ints", None)],
          doc="Pad with a scalar value (negative low/high crop).")


def _squeeze(types, attrs):
    (x,) = types
    axes = norm_axes(attrs["axes"], x.rank)
    for a in axes:
        require(x.shape[a] == 1, f"squeeze: dim {a} of {x} is not 1")
    return [x.with_shape(d for i, d in enumerate(x.shape) if i not in axes)]


define_op("squeeze", _squeeze, traits=SHAPE, attrs=[AttrSpec("axes", "ints")],
          doc="Drop size-1 dims.")


def _expand_dims(types, attrs):
    (x,) = types
    rank = x.rank + len(attrs["axes"])
    axes = norm_axes(attrs["axes"], rank)
    shape, it = [], iter(x.shape)
    for i in range(rank):
        shape.append(1 if i in axes else next(it))
    return [x.with_shape(shape)]


define_op("expand_dims", _expand_dims, traits=SHAPE, attrs=[AttrSpec("axes", "ints")],
          doc="Insert size-1 dims at the given output positions.")


def _rev(types, attrs):
    norm_axes(attrs["axes"], types[0].rank)
    return [types[0]]


define_op("rev", _rev, traits=SHAPE, attrs=[AttrSpec("axes", "ints")], doc="Reverse along axes.")


def _iota(types, attrs):
    shape = attrs["shape"]
    norm_axis(attrs["axis"], len(shape))
    return [TensorType(shape, attrs["dtype"])]


define_op("iota", _iota, arity=0,
          attrs=[AttrSpec("dtype", "dtype"), AttrSpec("shape", "ints"), AttrSpec("axis", "int", 0)],
          doc="0, 1, 2, ... along axis, broadcast to shape.")


def _constant(types, attrs):
    return [TensorType(attrs.get("shape", ()), attrs["dtype"])]


define_op("constant", _constant, arity=0,
          attrs=[AttrSpec("value", "any", doc="scalar value"), AttrSpec("dtype", "dtype"),
                 AttrSpec("shape", "ints", (), doc="broadcast shape")],
          doc="A scalar literal broadcast to shape (arrays are params instead).")
