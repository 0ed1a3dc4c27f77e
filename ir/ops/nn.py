"""Compute-heavy neural-network ops: dot_general, conv, windowed reductions, norms, softmax."""
from __future__ import annotations

from ..registry import AttrSpec, define_op
from ..types import TensorType, dims_equal, eval_dim
from ._rules import norm_axis, require, same_dtype, window_size


def _dot_general(types, attrs):
    lhs, rhs = types
    (lc, rc), (lb, rb) = attrs["contracting_dims"], attrs.get("batch_dims", ((), ()))
    require(len(lc) == len(rc) and len(lb) == len(rb),
            f"dot_general: contracting/batch dims must pair up, got {attrs['contracting_dims']}, "
            f"{attrs.get('batch_dims')}")
    for a, b in list(zip(lc, rc)) + list(zip(lb, rb)):
        require(0 <= a < lhs.rank and 0 <= b < rhs.rank,
                f"dot_general: dims ({a}, {b}) out of range for {lhs} x {rhs}")
        require(dims_equal(lhs.shape[a], rhs.shape[b]),
                f"dot_general: lhs dim {a} ({lhs.shape[a]}) != rhs dim {b} ({rhs.shape[b]})")
    dtype = attrs.get("preferred_element_type") or same_dtype(types, "dot_general")
    lf = [d for i, d in enumerate(lhs.shape) if i not in lc and i not in lb]
    rf = [d for i, d in enumerate(rhs.shape) if i not in rc and i not in rb]
    return [TensorType(tuple(lhs.shape[i] for i in lb) + tuple(lf) + tuple(rf), dtype)]


def _dot_flops(ins, outs, attrs, symbols):
    k = 1
    for a in attrs["contracting_dims"][0]:
        k *= eval_dim(ins[0].shape[a], symbols, default=1)
    return 2 * outs[0].numel(symbols) * k


define_op("dot_general", _dot_general, arity=2, flops=_dot_flops,
          attrs=[AttrSpec("contracting_dims", "any", doc="((lhs dims), (rhs dims))"),
                 AttrSpec("batch_dims", "any", ((), ()), "((lhs dims), (rhs dims))"),
                 AttrSpec("preferred_element_type", "dtype", None, "accumulation/output type")],
          doc="General tensor contraction; output is batch dims, lhs free dims, rhs free dims.")


def conv_spatial(spec: str, kernel_spec: str | None = None) -> list[int]:
    """Positions of the spatial dims in a layout ('NHWC' -> [1, 2]), in the kernel's order.

    Spatial dims pair up across the three layouts by letter; their order (which one
    window_strides[0] means) is the order the letters have in the kernel layout, as in lax.
    """
    letters = [c for c in (kernel_spec or spec) if c not in "NCOI"]
    return [spec.index(c) for c in letters]


def _conv(types, attrs):
    lhs, rhs = types
    lspec, rspec, ospec = attrs["dimension_numbers"]
    require(len(lspec) == lhs.rank and len(rspec) == rhs.rank and len(ospec) == lhs.rank,
            f"conv: layouts {attrs['dimension_numbers']} do not match ranks of {lhs}, {rhs}")
    nsp = lhs.rank - 2
    strides = attrs.get("window_strides") or (1,) * nsp
    padding = attrs.get("padding") or ((0, 0),) * nsp
    ldil = attrs.get("lhs_dilation") or (1,) * nsp
    rdil = attrs.get("rhs_dilation") or (1,) * nsp
    groups = attrs.get("feature_group_count", 1)
    bgroups = attrs.get("batch_group_count", 1)
    require(len(strides) == len(padding) == len(ldil) == len(rdil) == nsp,
            f"conv: strides/padding/dilations need {nsp} entries")
    n, c = lhs.shape[lspec.index("N")], lhs.shape[lspec.index("C")]
    o, i = rhs.shape[rspec.index("O")], rhs.shape[rspec.index("I")]
    # A symbolic channel count that may equal the kernel's is checked when shapes are known.
    require(not isinstance(c - i * groups, int) or c == i * groups,
            f"conv: input channels {c} != kernel in-channels {i} x groups {groups}")
    if isinstance(o, int):
        require(o % (groups * bgroups) == 0, f"conv: out channels {o} not divisible by groups")
    require(sorted(c for c in lspec if c not in 'NC') == sorted(c for c in rspec if c not in 'OI')
            == sorted(c for c in ospec if c not in 'NC'),
            f"conv: spatial letters differ across layouts {attrs['dimension_numbers']}")
    lsp, rsp = conv_spatial(lspec, rspec), conv_spatial(rspec)
    out_sp = []
    for k in range(nsp):
        x, w = lhs.shape[lsp[k]], rhs.shape[rsp[k]]
        require(isinstance(w, int), f"conv: kernel spatial dims must be static, got {rhs}")
        out_sp.append(window_size(x, w, strides[k], padding[k][0], padding[k][1], ldil[k], rdil[k],
                                  f"conv (spatial dim {k} of {lhs})"))
    dims = {"N": n if bgroups == 1 else n // bgroups, "C": o}
    out = [None] * lhs.rank
    out[ospec.index("N")], out[ospec.index("C")] = dims["N"], dims["C"]
    for pos, size in zip(conv_spatial(ospec, rspec), out_sp):
        out[pos] = size
    dtype = attrs.get("preferred_element_type") or same_dtype(types, "conv")
    return [TensorType(tuple(out), dtype)]


def _conv_flops(ins, outs, attrs, symbols):
    rspec = attrs["dimension_numbers"][1]
    k = 1
    for pos in conv_spatial(rspec):
        k *= eval_dim(ins[1].shape[pos], symbols, default=1)
    k *= eval_dim(ins[1].shape[rspec.index("I")], symbols, default=1)
    return 2 * outs[0].numel(symbols) * k


define_op("conv", _conv, arity=2, flops=_conv_flops,
          attrs=[AttrSpec("dimension_numbers", "any", doc="(lhs, rhs, out) layouts e.g. ('NHWC','HWIO','NHWC')"),
                 AttrSpec("window_strides", "ints", None), AttrSpec("padding", "any", None, "((lo, hi), ...)"),
                 AttrSpec("lhs_dilation", "ints", None), AttrSpec("rhs_dilation", "ints", None),
                 AttrSpec("feature_group_count", "int", 1), AttrSpec("batch_group_count", "int", 1),
                 AttrSpec("preferred_element_type", "dtype", None)],
          doc="N-d convolution (lax.conv_general_dilated semantics).")


def _reduce_window(types, attrs):
    (x,) = types
    win = attrs["window_dimensions"]
    strides = attrs.get("window_strides") or (1,) * x.rank
    padding = attrs.get("padding") or ((0, 0),) * x.rank
    bdil = attrs.get("base_dilation") or (1,) * x.rank
    wdil = attrs.get("window_dilation") or (1,) * x.rank
    require(len(win) == len(strides) == len(padding) == len(bdil) == len(wdil) == x.rank,
            f"reduce_window: window config needs {x.rank} entries for {x}")
    require(attrs["kind"] in ("max", "min", "sum", "prod"), f"reduce_window: unknown kind {attrs['kind']!r}")
    out = []
    for k, (d, w, s, (lo, hi), bd, wd) in enumerate(zip(x.shape, win, strides, padding, bdil, wdil)):
        out.append(window_size(d, w, s, lo, hi, bd, wd, f"reduce_window (dim {k} of {x})"))
    return [x.with_shape(out)]


def _window_flops(ins, outs, attrs, symbols):
    k = 1
    for w in attrs["window_dimensions"]:
        k *= w
    return outs[0].numel(symbols) * k


define_op("reduce_window", _reduce_window, flops=_window_flops,
          attrs=[AttrSpec("kind", "str", doc="max | min | sum | prod"),
                 AttrSpec("window_dimensions", "ints"), AttrSpec("window_strides", "ints", None),
                 AttrSpec("padding", "any", None), AttrSpec("base_dilation", "ints", None),
                 AttrSpec("window_dilation", "ints", None)],
          doc="Pooling: reduce each window (padding contributes the reduction's identity).")


def _batch_norm(types, attrs):
    x, *stats = types
    axis = norm_axis(attrs.get("axis", 1), x.rank)
    for t in stats:
        require(t.rank == 1 and dims_equal(t.shape[0], x.shape[axis]),
                f"batch_norm: statistics {t} must be vectors of length {x.shape[axis]} (axis {axis} of {x})")
    same_dtype(types, "batch_norm")
    return [x]


define_op("batch_norm", _batch_norm, arity=5, flops=lambda i, o, a, s: 2 * o[0].numel(s),
          attrs=[AttrSpec("epsilon", "float", 1e-5), AttrSpec("axis", "int", 1, "feature axis")],
          doc="Inference batch-norm: (x - mean) * scale / sqrt(var + eps) + bias; inputs x, scale, "
              "bias, mean, var.")


def _softmax(types, attrs):
    norm_axis(attrs.get("axis", -1), types[0].rank)
    return [types[0]]


for _op in ["softmax", "log_softmax"]:
    define_op(_op, _softmax, flops=lambda i, o, a, s: 5 * o[0].numel(s),
              attrs=[AttrSpec("axis", "int", -1)], doc=f"{_op} along axis.")
