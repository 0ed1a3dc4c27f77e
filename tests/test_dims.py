"""Symbolic dims: normal forms evaluate like the expressions they came from, and print/parse."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from tensorsmith.errors import TensorsmithError
from tensorsmith.ir import TensorType
from tensorsmith.ir.dims import (DimError, DimExpr, InconclusiveDimension, dim_ge, dim_max,
                                 dim_min, exact_div, parse_dim)
from tensorsmith.ir.types import check_dim, dims_equal

SYMS = ("A", "B", "C")

# An expression tree: ("sym", name) | ("int", v) | (op, left, right) | ("//", e, k) | ("%", e, k)
leaves = st.one_of(st.sampled_from(SYMS).map(lambda s: ("sym", s)),
                   st.integers(-5, 9).map(lambda v: ("int", v)))


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "max", "min"]), children, children),
        st.tuples(st.sampled_from(["//", "%"]), children, st.integers(1, 6)),
    )


trees = st.recursive(leaves, _extend, max_leaves=8)


def direct(t, env):
    """Evaluate a tree with Python ints (the oracle)."""
    kind = t[0]
    if kind == "sym":
        return env[t[1]]
    if kind == "int":
        return t[1]
    a = direct(t[1], env)
    if kind in ("//", "%"):
        return a // t[2] if kind == "//" else a % t[2]
    b = direct(t[2], env)
    return {"+": a + b, "-": a - b, "*": a * b, "max": max(a, b), "min": min(a, b)}[kind]


def build(t):
    """The same tree through DimExpr arithmetic."""
    kind = t[0]
    if kind == "sym":
        return DimExpr.symbol(t[1])
    if kind == "int":
        return t[1]
    a = build(t[1])
    if kind in ("//", "%"):
        return a // t[2] if kind == "//" else a % t[2]
    b = build(t[2])
    if kind in ("max", "min"):
        return dim_max(a, b) if kind == "max" else dim_min(a, b)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b}[kind]()


def text(t) -> str:
    """The tree written as (fully parenthesised) dim text."""
    kind = t[0]
    if kind in ("sym", "int"):
        return str(t[1]) if kind == "sym" or t[1] >= 0 else f"({t[1]})"
    if kind in ("//", "%"):
        return f"({text(t[1])}){kind}{t[2]}"
    if kind in ("max", "min"):
        return f"{kind}({text(t[1])},{text(t[2])})"
    return f"({text(t[1])}){kind}({text(t[2])})"


def value(d, env):
    return d if isinstance(d, int) else d.evaluate(env)


points = st.fixed_dictionaries({s: st.integers(1, 40) for s in SYMS})


@settings(max_examples=400, deadline=None)
@given(trees, st.lists(points, min_size=8, max_size=8))
def test_normal_form_evaluates_like_the_expression(t, envs):
    d = build(t)
    for env in envs:
        assert value(d, env) == direct(t, env), (text(t), str(d), env)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_print_parse_round_trip(t):
    d = build(t)
    again = parse_dim(str(d))
    assert again == d and str(again) == str(d)
    assert parse_dim(text(t)) == d  # parsing the raw text reaches the same normal form


@settings(max_examples=200, deadline=None)
@given(trees, trees, st.lists(points, min_size=6, max_size=6))
def test_equal_forms_evaluate_equal_and_comparisons_are_sound(t1, t2, envs):
    a, b = build(t1), build(t2)
    ge = dim_ge(a, b)
    for env in envs:
        va, vb = value(a, env), value(b, env)
        if a == b:
            assert va == vb
        if ge is True:
            assert va >= vb
        if ge is False:
            assert va < vb


def test_known_traps_are_told_apart():
    N = DimExpr.symbol("N")
    assert (N // 2) * 2 != N - 1
    assert N % 2 + N != N + 1
    assert not dims_equal("(N//2)*2", "N-1")
    assert not dims_equal("N%2+N", "N+1")


def test_normal_forms_from_the_issue():
    assert str(parse_dim("(H-1)//2+1")) == "(H+1)//2" == str(parse_dim("(H+1)//2"))
    assert str(parse_dim("(2*L+3)//2")) == "L+1"
    assert str(parse_dim("0+H+H")) == "2*H"
    assert str(parse_dim("H//2*2+H%2")) == "H"
    assert parse_dim("N-N") == 0 and isinstance(parse_dim("3*4"), int)
    t = TensorType(("N", 16, "(H-1)//2+1", "max(W,3)"), "f32")
    assert str(t) == "f32[N,16,(H+1)//2,max(3,W)]"


def test_comparisons_three_valued():
    H = DimExpr.symbol("H")
    assert dim_ge(H, 1) is True and dim_ge(H, 2) is None and dim_ge(H // 2, H) is False
    assert dim_ge(H, dim_min(5, H)) is True
    assert H >= 1
    with pytest.raises(InconclusiveDimension, match="H >= 2"):
        H >= 2  # noqa: B015


def test_exact_division():
    N, H = DimExpr.symbol("N"), DimExpr.symbol("H")
    assert exact_div(6 * N * H, 3) == 2 * N * H
    assert exact_div(6 * N * H, 3 * N) == 2 * H
    assert exact_div(N + 1, 2) is None


@pytest.mark.parametrize("bad, words", [
    ("1//0", "division by zero"), ("N//0", "division by zero"), ("N+", "'N+'"),
    ("2**N", "'2**N'"), ("N$", "'N$'"), ("", "empty"), ("(N", "')'"), ("-3", "negative"),
    ("-N", "negative"), ("N%0", "division by zero"),
])
def test_bad_dims_raise_tensorsmith_errors(bad, words):
    with pytest.raises(DimError, match=re.escape(words)) as e:
        check_dim(bad)
    assert isinstance(e.value, TensorsmithError)


def test_bad_dim_in_ir_text_names_the_line():
    from tensorsmith.ir import parse
    from tensorsmith.ir.parser import ParseError
    with pytest.raises(ParseError, match=r"line 1: .*'N\+\+1'"):
        parse("graph @g(%x: f32[N++1]) {\n  return %x\n}\n")
    with pytest.raises(TensorsmithError, match="division by zero"):
        TensorType((1, "N//0"), "f32")
    with pytest.raises(TensorsmithError, match="negative"):
        TensorType((-1,), "f32")


# --- type rules with symbolic dims ---------------------------------------------------------------
from tensorsmith.ir import Attrs, OpTypeError, get_op  # noqa: E402


def infer(op, types, **attrs):
    return [str(t) for t in get_op(op).infer([TensorType(tuple(s), d) for s, d in types], Attrs(attrs))]


def test_conv_and_pool_sizes_with_strides_pads_dilations():
    out = infer("conv", [(("N", 3, "H", "W"), "f32"), ((8, 3, 3, 3), "f32")],
                dimension_numbers=("NCHW", "OIHW", "NCHW"), window_strides=(2, 1),
                padding=((1, 1), (0, 2)), rhs_dilation=(1, 2))
    # (H + 1 + 1 - 3)//2 + 1 and (W + 0 + 2 - 5)//1 + 1
    assert out == ["f32[N,8,(H+1)//2,W-2]"]
    out = infer("reduce_window", [(("N", 8, "(H+1)//2", "W"), "f32")], kind="max",
                window_dimensions=(1, 1, 3, 3), window_strides=(1, 1, 2, 2),
                padding=((0, 0), (0, 0), (1, 1), (1, 1)))
    assert out == ["f32[N,8,(H+3)//4,(W+1)//2]"]


def test_pad_slice_concat_reshape_broadcast():
    assert infer("pad", [(("B", "L"), "f32"), ((), "f32")], low=(0, 3), high=(0, 2),
                 interior=(0, 1)) == ["f32[B,2*L+4]"]
    assert infer("slice", [(("B", "L"), "f32")], start=(0, 1), limit=("B", "max(L-1,1)"),
                 strides=(1, 2)) == ["f32[B,(max(2,L)+1)//2-1]"]
    assert infer("slice", [(("B", "L"), "f32")], start=(0, 0), limit=("B", "min(5,L)")) \
        == ["f32[B,min(5,L)]"]
    assert infer("concatenate", [(("N", "H"), "f32"), (("N", "H"), "f32"), (("N", 3), "f32")],
                 axis=1) == ["f32[N,2*H+3]"]
    assert infer("reshape", [(("N", "H", 4), "f32")], shape=("2*N", "H", 2)) == ["f32[2*N,H,2]"]
    assert infer("broadcast_in_dim", [((1, "H"), "f32")], shape=("N", "H"),
                 broadcast_dimensions=(0, 1)) == ["f32[N,H]"]


@pytest.mark.parametrize("op, types, attrs, words", [
    ("slice", [(("L",), "f32")], dict(start=(0,), limit=(5,)), "cannot prove L >= 5"),
    ("slice", [(("L",), "f32")], dict(start=(0,), limit=("L+1",)), "is not within 0..L"),
    ("reshape", [(("N", "L"), "f32")], dict(shape=("N", "L", 2)), "(L*N elements) to [N,L,2] (2*L*N elements)"),
    ("concatenate", [(("N", "H"), "f32"), (("M", "H"), "f32")], dict(axis=1), "dim 0 differs"),
    ("conv", [(("N", 3, 4), "f32"), ((8, 3, 7), "f32")],
     dict(dimension_numbers=("NCW", "OIW", "NCW")), "window 7 (dilated 7) is larger"),
    ("pad", [(("N", 3), "f32"), ((), "f32")], dict(low=(1, -4), high=(0, 0)),
     "dimension 1 of f32[N,3] becomes negative (-1)"),
    ("dynamic_slice", [(("L",), "f32"), ((), "i32")], dict(sizes=("L+1",)), "does not fit in L"),
])
def test_rules_refuse_provably_wrong_or_unprovable_dims(op, types, attrs, words):
    with pytest.raises(OpTypeError, match=re.escape(words)):
        infer(op, types, **attrs)
