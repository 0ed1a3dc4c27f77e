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
