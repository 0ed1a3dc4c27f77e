"""Reductions, arg-reductions, scans, sort and top-k."""
from __future__ import annotations

import functools
import math

from ..registry import AttrSpec, define_op
from ..dims import dim_ge
from ..types import FLOAT_DTYPES, TensorType, is_int
from ._rules import norm_axes, norm_axis, require

REDUCTIONS = ["reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
              "reduce_xor"]


def _reduced_shape(x: TensorType, axes, keepdims: bool):
    axes = norm_axes(axes, x.rank)
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _reduce(types, attrs, op=""):
    (x,) = types
    # reduce_and/or/xor are bitwise (ints, bools); sums and products have no bool form in XLA.
    logical = op in ("reduce_and", "reduce_or", "reduce_xor")
    if logical:
        require(x.dtype == "bool" or is_int(x.dtype), f"{op} takes bool or int elements, got {x}")
    elif op in ("reduce_sum", "reduce_prod"):
        require(x.dtype != "bool", f"{op} takes numbers, got {x} (convert bools first)")
    return [x.with_shape(_reduced_shape(x, attrs["axes"], attrs.get("keepdims", False)))]


def _input_numel(ins, outs, attrs, symbols):
    return ins[0].numel(symbols)


for _op in REDUCTIONS:
    define_op(_op, functools.partial(_reduce, op=_op), traits=["reduction"], flops=_input_numel,
              attrs=[AttrSpec("axes", "ints"), AttrSpec("keepdims", "bool", False)],
              doc=f"{_op[7:]} over axes.")


def _argreduce(types, attrs):
    (x,) = types
    axis = norm_axis(attrs["axis"], x.rank)
    shape = _reduced_shape(x, (axis,), attrs.get("keepdims", False))
    return [TensorType(shape, attrs.get("index_dtype", "i32"))]


for _op in ["argmax", "argmin"]:
    define_op(_op, _argreduce, traits=["reduction"], flops=_input_numel,
              attrs=[AttrSpec("axis", "int"), AttrSpec("keepdims", "bool", False),
                     AttrSpec("index_dtype", "dtype", "i32"),
                     AttrSpec("select_last_index", "bool", False)],
              doc=f"Index of the {_op[3:]} along axis (first one unless select_last_index).")


def _scan(types, attrs, op=""):
    norm_axis(attrs["axis"], types[0].rank)
    require(types[0].dtype != "bool", f"{op} takes numbers, got {types[0]}")
    require(op != "cumlogsumexp" or types[0].dtype in FLOAT_DTYPES,
            f"cumlogsumexp takes floats, got {types[0]}")
    return [types[0]]


for _op in ["cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"]:
    define_op(_op, functools.partial(_scan, op=_op), traits=["scan"], flops=_input_numel,
              attrs=[AttrSpec("axis", "int"), AttrSpec("reverse", "bool", False),
                     AttrSpec("exclusive", "bool", False)],
              doc=f"Running {_op[3:]} along axis.")


def _sort(types, attrs):
    axis = norm_axis(attrs.get("axis", -1), types[0].rank)
    for t in types:
        require(t.shape == types[0].shape, f"sort: operands differ in shape ({types[0]} vs {t})")
    require(1 <= attrs.get("num_keys", 1) <= len(types), "sort: num_keys out of range")
    del axis
    return list(types)


define_op("sort", _sort, arity=(1, None),
          flops=lambda i, o, a, s: int(i[0].numel(s) * max(1, math.log2(max(2, i[0].numel(s))))),
          attrs=[AttrSpec("axis", "int", -1), AttrSpec("descending", "bool", False),
                 AttrSpec("stable", "bool", True), AttrSpec("num_keys", "int", 1)],
          doc="Sort operands together by the first num_keys of them along axis.")


def _top_k(types, attrs):
    (x,) = types
    k = attrs["k"]
    axis = norm_axis(attrs.get("axis", -1), x.rank)
    require(k >= 0 and dim_ge(x.shape[axis], k) is not False,
            f"top_k: k={k} exceeds dim {x.shape[axis]} of {x}")
    shape = list(x.shape)
    shape[axis] = k
    return [x.with_shape(shape), TensorType(tuple(shape), attrs.get("index_dtype", "i32"))]


define_op("top_k", _top_k, flops=_input_numel,
          attrs=[AttrSpec("k", "int"), AttrSpec("axis", "int", -1), AttrSpec("largest", "bool", True),
                 AttrSpec("index_dtype", "dtype", "i32")],
          doc="The k largest (or smallest) values along axis, sorted, with their indices.")
