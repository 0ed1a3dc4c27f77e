"""fold-batchnorm: a per-channel scale/shift after a conv or dense layer folds into its weights."""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.types import is_float, numpy_dtype
from .context import PassContext
from .registry import register_pass
from .rewrite import Rewriter, apply_patterns, pattern

# Element-wise ops a constant operand may be computed with (rsqrt(var + eps) * gamma ...).
_UNARY = {"neg": np.negative, "sqrt": np.sqrt, "rsqrt": lambda a: 1.0 / np.sqrt(a),
          "exp": np.exp, "abs": np.abs}
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "max": np.maximum, "min": np.minimum}
_MAX_CONST = 1 << 20  # per-channel operands are small; a bigger constant is not a BN statistic


def _const(rw: Rewriter, v: Value, depth: int = 8) -> np.ndarray | None:
    """``v`` as a float64 array when it is computed from params and literals only, else None."""
    arr = rw.param_array(v)
    if arr is not None:
        return None if getattr(arr, "abstract", False) or arr.size > _MAX_CONST else \
            np.asarray(arr, np.float64)
    n = rw.producer(v)
    if n is None or depth == 0 or not all(isinstance(d, int) for d in v.type.shape):
        return None
    if n.op == "constant":
        return np.full(tuple(n.attrs.get("shape") or ()), n.attrs["value"], np.float64)
    ins = [_const(rw, x, depth - 1) for x in n.inputs]
    if any(a is None for a in ins):
        return None
    shape = tuple(v.type.shape)
    with np.errstate(all="ignore"):
        if n.op in _UNARY:
            out = _UNARY[n.op](ins[0])
        elif n.op in _BINARY:
            out = _BINARY[n.op](ins[0], ins[1])
        elif n.op in ("reshape", "convert"):
            out = ins[0].reshape(shape)
            if n.op == "convert" and not is_float(n.attrs["dtype"]):
                return None  # rounding to an integer is not a per-channel affine map
        elif n.op == "broadcast_in_dim":
            dims = tuple(n.attrs["broadcast_dimensions"])
            placed = [1] * len(shape)
            for d, size in zip(dims, ins[0].shape):
                placed[d] = size
            out = np.broadcast_to(ins[0].reshape(placed), shape)
        else:
            return None
    return np.asarray(out, np.float64).reshape(shape) if out.size == np.prod(shape) else None


def _linear(rw: Rewriter, n: Node | None):
    """(weight value, {output axis: weight axis}, default channel axis) of a conv/dense, else None."""
    if n is None or n.op not in ("conv", "dot_general") or not rw.is_param(n.inputs[1]) and not (
            n.op == "dot_general" and rw.is_param(n.inputs[0])):
        return None
    if n.op == "conv":
        _, rspec, ospec = n.attrs["dimension_numbers"]
        c = ospec.index("C")
        return n.inputs[1], 1, {c: rspec.index("O")}, c
    (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
    side = 1 if rw.is_param(n.inputs[1]) else 0
    w = n.inputs[side]
    contract, batch = (rc, rb) if side == 1 else (lc, lb)
    nb, nlf = len(lb), n.inputs[0].type.rank - len(lc) - len(lb)
    free = [i for i in range(w.type.rank) if i not in contract and i not in batch]
    start = nb + (nlf if side == 1 else 0)
    axes = {j: b for j, b in enumerate(batch)}
    axes.update({start + k: i for k, i in enumerate(free)})
    return w, side, axes, (max(axes) if axes else None)


def _varying(a: np.ndarray, rank: int) -> list[int]:
    """The axes along which a (rank-padded) constant has more than one entry."""
    return [i + rank - a.ndim for i, s in enumerate(a.shape) if s > 1]


def _describe(rw: Rewriter, v: Value) -> str:
    return ("@" if rw.is_param(v) else "%") + v.name


def _fold(rw: Rewriter, node: Node, t: Value, scale: np.ndarray | None, shift: np.ndarray | None,
          what: str):
    """Replace ``node`` (= t * scale + shift) when ``t`` is a conv/dense, plus at most a bias."""
    base, bias_node, bias = rw.producer(t), None, None
    if base is not None and base.op == "add":
        for lin, b in (base.inputs, base.inputs[::-1]):
            if _linear(rw, rw.producer(lin)) is not None and (bias := _const(rw, b)) is not None:
                bias_node, base = base, rw.producer(lin)
                break
        else:
            return None
    info = _linear(rw, base)
    if info is None:
        if base is not None and base.op in ("conv", "dot_general"):
            rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: its weight "
                                f"{_describe(rw, base.inputs[1])} is not a param", node)
        return None
    if bias_node is None and scale is None and node.op != "sub":
        return None  # conv + constant is already the folded form
    w, side, axes, default_axis = info
    stem = w.name.removesuffix("/folded")
    out = base.output
    rank = out.type.rank
    chain = [t] + ([base.output] if bias_node is not None else [])
    shared = [v for v in chain if rw.num_uses(v) > 1]
    if shared:
        rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: "
                            f"%{shared[-1].name} has other users", node)
        return None
    if not (is_float(out.type.dtype) and out.type.dtype == w.type.dtype == node.output.type.dtype):
        rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: not a float "
                            f"{out.type.dtype} layer with {w.type.dtype} weights", node)
        return None
    if node.output.type != t.type:
        rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: the constant "
                            f"broadcasts {t.type} to {node.output.type}", node)
        return None
    # y = (lin + bias) * scale + shift = lin * scale + (bias * scale + shift)
    new_bias = bias
    if scale is not None:
        new_bias = None if new_bias is None else new_bias * scale
    if shift is not None:
        new_bias = shift if new_bias is None else new_bias + shift
    for name, arr in (("scale", scale), ("shift", new_bias)):
        if arr is None:
            continue
        vary = _varying(arr, rank)
        if len(vary) > 1 or (vary and vary[0] not in axes):
            where = f"axes {tuple(vary)}" if len(vary) > 1 else f"axis {vary[0]}"
            rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: the {name} "
                                f"varies along {where} of {out.type}, not along the output channel "
                                f"(axis {'/'.join(map(str, sorted(axes))) or 'none'})", node)
            return None
    lin = out
    if scale is not None and not np.all(scale == 1.0):
        if not np.all(np.isfinite(scale)):
            rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: the scale is "
                                "not finite", node)
            return None
        if rw.num_uses(w) > 1:
            rw.remark("missed", f"did not fold {what} into {base.op} %{base.name}: its weight "
                                f"@{w.name} is shared with other nodes", node)
            return None
        warr = rw.param_array(w)
        vary = _varying(scale, rank)
        s = scale.reshape(-1)[:1] if not vary else scale.reshape(-1)
        shape = [1] * warr.ndim
        if vary:
            shape[axes[vary[0]]] = s.size
        folded = (warr.astype(np.float64) * s.reshape(shape)).astype(warr.dtype)
        wnew = rw.add_param(folded, f"{stem}/folded")
        rw.carry_annotations(w, wnew, kinds=("mask",))  # a scaled zero stays zero
        ins = [base.inputs[0], wnew] if side == 1 else [wnew, base.inputs[1]]
        lin = rw.op(base.op, *ins, loc=base.loc, **dict(base.attrs))
    result = lin
    if new_bias is not None:
        vary = _varying(new_bias, rank)
        axis = vary[0] if vary else default_axis
        dtype = numpy_dtype(out.type.dtype)
        if axis is None or not isinstance(out.type.shape[axis], int):
            b = rw.add_param(np.asarray(new_bias.reshape(-1)[0], dtype), f"{stem}/folded_bias")
        else:
            size = out.type.shape[axis]
            vec = np.broadcast_to(new_bias.reshape(-1), (size,)) if new_bias.size == 1 else \
                new_bias.reshape(-1)
            b = rw.add_param(np.ascontiguousarray(vec, dtype), f"{stem}/folded_bias")
            b = rw.op("broadcast_in_dim", b, loc=node.loc, broadcast_dimensions=(axis,),
                      shape=tuple(size if i == axis else 1 for i in range(rank)))
        result = rw.op("add", lin, b, loc=node.loc)
    rw.remark("applied", f"folded {what} into {base.op} %{base.name}"
                         f"{' (weight @' + w.name + ')' if lin is not out else ''}", node)
    rw.replace(node, result)
    for dead in (bias_node, base if lin is not out else None):
        if dead is not None:
            rw.erase(dead)  # single-use links of the chain: their reads no longer count
    return True


def _per_channel(a: np.ndarray, axis: int, rank: int) -> np.ndarray:
    return a.reshape([a.size if i == axis else 1 for i in range(rank)])


@pattern("fold-batch-norm-op", ops="batch_norm")
def fold_batch_norm_op(rw: Rewriter, node: Node):
    """batch_norm(conv(x, W) [+ b]) -> conv(x, W * s) + b' with s = scale / sqrt(var + eps)."""
    x, *stats = node.inputs
    if not _after_linear(rw, x):
        src = rw.producer(x)
        rw.remark("missed", f"did not fold batch_norm %{node.name}: its input %{x.name} is "
                            f"{'a graph input' if src is None else 'a ' + src.op + ' result'}, "
                            "not a conv or dense with a param weight", node)
        return None
    arrs = [_const(rw, v) for v in stats]
    if any(a is None for a in arrs):
        bad = next(v for v, a in zip(stats, arrs) if a is None)
        rw.remark("missed", f"did not fold batch_norm %{node.name}: its statistic "
                            f"{_describe(rw, bad)} is not a param or constant", node)
        return None
    gamma, beta, mean, var = arrs
    rank = x.type.rank
    axis = node.attrs.get("axis", 1) % rank
    scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return _fold(rw, node, x, _per_channel(scale, axis, rank),
                 _per_channel(beta - mean * scale, axis, rank), f"batch_norm %{node.name}")


def _after_linear(rw: Rewriter, t: Value) -> bool:
    """``t`` is a conv/dense output, or one plus something."""
    p = rw.producer(t)
    return p is not None and (_linear(rw, p) is not None or p.op == "add" and any(
        _linear(rw, rw.producer(v)) is not None for v in p.inputs))


def _try(rw: Rewriter, node: Node, pairs, make) -> bool | None:
    """Try ``(t, c)`` operand orders: fold when ``c`` is constant, else say why if it was close."""
    for t, c in pairs:
        if not _after_linear(rw, t) or node.op == "add" and _linear(rw, rw.producer(t)):
            continue  # conv + c with nothing before the add to merge is already the folded form
        arr = _const(rw, c)
        if arr is None:
            # A full-size operand (a gate, a residual) is not a scale or shift: no remark then.
            if tuple(c.type.shape) != tuple(node.output.type.shape):
                rw.remark("missed", f"did not fold {node.op} %{node.name}: its operand "
                                    f"{_describe(rw, c)} is not a param or constant", node)
            continue
        made = make(arr)
        if made is None:
            continue
        if _fold(rw, node, t, *made, f"{node.op} %{node.name}"):
            return True
    return None


@pattern("fold-scale", ops=("mul", "div"))
def fold_scale(rw: Rewriter, node: Node):
    """(conv(x, W) [+ b]) * s -> conv(x, W * s) [+ b * s] for a per-output-channel constant s."""
    a, b = node.inputs
    if node.op == "div":
        # a division by zero stays as written
        return _try(rw, node, [(a, b)], lambda arr: (1.0 / arr, None) if np.all(arr) else None)
    return _try(rw, node, [(a, b), (b, a)], lambda arr: (arr, None))


@pattern("fold-shift", ops=("add", "sub"))
def fold_shift(rw: Rewriter, node: Node):
    """(conv(x, W) + b) + c -> conv(x, W) + (b + c) for a per-output-channel constant c."""
    a, b = node.inputs
    if node.op == "sub":
        return _try(rw, node, [(a, b)], lambda arr: (None, -arr))
    return _try(rw, node, [(a, b), (b, a)], lambda arr: (None, arr))


PATTERNS = [fold_batch_norm_op, fold_scale, fold_shift]


@register_pass("fold-batchnorm")
def fold_batchnorm(graph: Graph, ctx: PassContext) -> Graph:
    """Fold inference batch-norm and constant per-channel scale/shift into conv/dense weights."""
    return apply_patterns(graph, PATTERNS, ctx, regions=True)
