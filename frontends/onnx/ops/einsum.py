"""Einsum as IR: diagonals, then pairwise dot_generals left to right, sums and a transpose."""
from __future__ import annotations

import re

from ..registry import onnx_op
from ._util import broadcast_shapes


def parse_equation(eq: str, ranks: list[int]):
    """``(operand labels, output labels)``; ellipsis dims become labels '.0', '.1'... aligned right."""
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation {eq!r} names {len(terms)} operands, the node has {len(ranks)}")
    n_ell = 0
    for t, r in zip(terms, ranks):
        if "..." in t:
            n_ell = max(n_ell, r - len(t.replace("...", "")))

    def labels(term: str, rank: int | None) -> list[str]:
        if not re.fullmatch(r"[A-Za-z]*(\.\.\.)?[A-Za-z]*", term):
            raise ValueError(f"bad einsum term {term!r} in {eq!r}")
        before, ell, after = term.partition("...")
        k = 0 if not ell else (n_ell if rank is None else rank - len(before) - len(after))
        if rank is not None and len(before) + len(after) + k != rank:
            raise ValueError(f"term {term!r} of {eq!r} does not match an operand of rank {rank}")
        return list(before) + [f".{i}" for i in range(n_ell - k, n_ell)] + list(after)

    ins = [labels(t, r) for t, r in zip(terms, ranks)]
    if arrow:
        out = labels(rhs, None)
    else:  # implicit output: ellipsis dims, then the letters used once, alphabetically
        flat = [c for op in ins for c in op]
        out = [f".{i}" for i in range(n_ell)] + sorted(c for c in set(flat)
                                                       if len(c) == 1 and flat.count(c) == 1)
    return ins, out


def _diagonal(ctx, x, labels: list[str]):
    """Merge repeated labels of one operand by taking the diagonal."""
    while len(set(labels)) != len(labels):
        lab = next(c for c in labels if labels.count(c) > 1)
        i = labels.index(lab)
        j = labels.index(lab, i + 1)
        n = x.shape[i]
        eye = ctx.op("eq", ctx.op("iota", dtype="i32", shape=(n, n), axis=0),
                     ctx.op("iota", dtype="i32", shape=(n, n), axis=1))
        mask = ctx.op("broadcast_in_dim", ctx.convert(eye, x.dtype), shape=tuple(x.shape),
                      broadcast_dimensions=(i, j))
        x = ctx.op("reduce_sum", ctx.op("mul", x, mask), axes=(j,), keepdims=False)
        labels = labels[:j] + labels[j + 1:]
    return x, labels


def _sum_out(ctx, x, labels, keep):
    axes = tuple(i for i, c in enumerate(labels) if c not in keep)
    if not axes:
        return x, labels
    x = ctx.op("reduce_sum", x, axes=axes, keepdims=False)
    return x, [c for c in labels if c in keep]


def einsum(ctx, equation: str, operands):
    """The IR of ``numpy.einsum(equation, *operands)``."""
    try:
        ins, out = parse_equation(equation, [v.type.rank for v in operands])
    except ValueError as e:
        ctx.unsupported(str(e))
    terms = [_diagonal(ctx, v, labs) for v, labs in zip(operands, ins)]
    # a label's size: broadcast over operands (ellipsis dims may be 1 in some of them)
    size = {}
    for v, labs in terms:
        for c, d in zip(labs, v.shape):
            size[c] = broadcast_shapes((size.get(c, 1),), (d,))[0]
    acc, acc_labs = terms[0]
    for k in range(1, len(terms) + 1):
        later = set(out).union(*(set(labs) for _, labs in terms[k + 1:]))
        if k == len(terms):
            acc, acc_labs = _sum_out(ctx, acc, acc_labs, set(out))
            break
        b, b_labs = terms[k]
        acc, acc_labs = _sum_out(ctx, acc, acc_labs, later | set(b_labs))
        b, b_labs = _sum_out(ctx, b, b_labs, later | set(acc_labs))
        acc = _expand(ctx, acc, acc_labs, size)
        b = _expand(ctx, ctx.convert(b, acc.dtype), b_labs, size)
        shared = [c for c in acc_labs if c in b_labs]
        batch = [c for c in shared if c in later]
        contract = [c for c in shared if c not in later]
        acc = ctx.op("dot_general", acc, b,
                     contracting_dims=(tuple(acc_labs.index(c) for c in contract),
                                       tuple(b_labs.index(c) for c in contract)),
                     batch_dims=(tuple(acc_labs.index(c) for c in batch),
                                 tuple(b_labs.index(c) for c in batch)))
        acc_labs = batch + [c for c in acc_labs if c not in shared] + [c for c in b_labs if c not in shared]
    missing = [c for c in out if c not in acc_labs]
    if missing:
        ctx.unsupported(f"output labels {missing} of {equation!r} appear in no operand")
    acc = _expand(ctx, acc, acc_labs, size)
    perm = tuple(acc_labs.index(c) for c in out)
    if perm != tuple(range(len(perm))):
        acc = ctx.op("transpose", acc, permutation=perm)
    return acc


def _expand(ctx, x, labels, size):
    """``x`` broadcast where one of its dims is 1 but the label is bigger elsewhere."""
    shape = tuple(size[c] for c in labels)
    if tuple(x.shape) == shape:
        return x
    return ctx.op("broadcast_in_dim", x, shape=shape, broadcast_dimensions=tuple(range(len(shape))))


@onnx_op("Einsum", since=12)
def _einsum(ctx, *operands):
    return einsum(ctx, ctx.attr("equation"), [v for v in operands if v is not None])
