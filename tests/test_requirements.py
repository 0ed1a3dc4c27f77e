"""Requirements on symbols (``Graph.requires``): text form, round trips, and what keeps them."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tensorsmith import ir
from tensorsmith.callcheck import ArgChecker
from tensorsmith.errors import CallError
from tensorsmith.ir.dims import assuming, dim_ge, eval_dim
from tensorsmith.ir.dimtext import parse_dim
from tensorsmith.ir.graph import Requirement, parse_requirement
from tensorsmith.ir.parser import ParseError

TEXT = """graph @g(%x: f32[N,S]) {
  param @pos: f32[1,512]  # 512 elems, 2.0 KiB, 100.0% zero
  requires S <= 512  # /model/embeddings/Slice: Slice end S must fit in the axis of size 512
  requires N*S >= 4  # "odd name: with colon"
  requires H >= W+1
  %p: f32[1,S] = slice(@pos) {limit=(1, "S"), start=(0, 0)}  # /model/embeddings/Slice
  %y: f32[N,S] = add(%x, %p)
  return %y
}
"""


def _graph():
    return ir.parse(TEXT, {"pos": np.zeros((1, 512), np.float32)})


def test_text_round_trip_is_identical():
    g = _graph()
    assert g.to_text() == TEXT
    assert [str(r.expr) for r in g.requires] == ["-S+512", "N*S-4", "H-W-1"]
    assert g.requires[0].origin == "/model/embeddings/Slice"
    assert g.requires[0].reason == "Slice end S must fit in the axis of size 512"
    assert g.requires[1].origin == "odd name: with colon" and g.requires[1].reason == ""
    assert g.requires[2].origin == "" and g.requires[2].reason == ""


def test_the_slice_verifies_only_under_its_requirement():
    g = _graph()
    ir.verify(g)  # S <= 512 is a fact for the slice's rule
    bare = g.replace(requires=())
    with pytest.raises(ir.VerificationError, match=r"cannot prove 512 >= S"):
        ir.verify(bare)


def test_save_load_and_graph_copies_keep_requirements(tmp_path):
    g = _graph()
    path = tmp_path / "g.tsir"
    ir.save(g, path)
    back = ir.load(path)
    assert back.requires == g.requires and back.to_text() == g.to_text()
    assert g.replace(nodes=g.nodes).requires == g.requires
    assert g.with_params({}).requires == g.requires


def test_pipeline_keeps_requirements():
    from tensorsmith.passes.manager import run_pipeline
    out, _ = run_pipeline(_graph(), "default")
    assert out.requires == _graph().requires
    assert "requires S <= 512" in out.to_text()


def test_duplicates_merge_and_constants_drop():
    a = Requirement(parse_dim("512-S"), "first")
    g = _graph().replace(requires=(a, Requirement(parse_dim("512-S"), "second"), Requirement(3, "c")))
    assert g.requires == (a,)


def test_bad_requirement_text_names_the_line():
    with pytest.raises(ParseError, match=r"line 3: .*'a >= b' or 'a <= b'"):
        ir.parse(TEXT.replace("requires S <= 512", "requires S < 512"))


def test_assumed_requirements_decide_comparisons_only_inside_the_block():
    s = parse_dim("S")
    assert dim_ge(512, s) is None
    with assuming([Requirement(512 - s)]):
        assert dim_ge(512, s) is True
        assert dim_ge(600, s) is True     # 600 - S >= 512 - S >= 0
        assert dim_ge(500, s) is None     # not implied
    assert dim_ge(512, s) is None


def test_call_check_names_input_axis_size_requirement_and_node():
    g = _graph()
    checker = ArgChecker([(v.name, v.type) for v in g.inputs], "model @g", requires=g.requires[:1])
    checker.check([np.zeros((2, 512), np.float32)])
    with pytest.raises(CallError) as e:
        checker.check([np.zeros((2, 600), np.float32)])
    assert str(e.value) == ("model @g: input 'x' axis 1 (S) = 600, but the model requires S <= 512 "
                            "(/model/embeddings/Slice: Slice end S must fit in the axis of size 512)")


_SYMS = ["N", "S", "H"]
_exprs = st.recursive(
    st.one_of(st.integers(-40, 40), st.sampled_from(_SYMS).map(parse_dim)),
    lambda sub: st.one_of(
        st.tuples(sub, sub).map(lambda t: t[0] + t[1]),
        st.tuples(sub, sub).map(lambda t: t[0] - t[1]),
        st.tuples(sub, st.integers(-3, 3)).map(lambda t: t[0] * t[1]),
        st.tuples(sub, st.integers(1, 4)).map(lambda t: t[0] // t[1])),
    max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(_exprs, st.lists(st.integers(1, 50), min_size=3, max_size=3))
def test_condition_text_parses_back_and_agrees_with_the_expression(e, sizes):
    if isinstance(e, int):
        return
    r = Requirement(e)
    assert parse_requirement(r.condition()) == e
    env = dict(zip(_SYMS, sizes))
    assert r.holds(env) == (eval_dim(e, env) >= 0)


def test_jax_symbolic_shape_constraints_become_requirements(tmp_path):
    import jax
    import jax.numpy as jnp

    import tensorsmith

    n, h = jax.export.symbolic_shape("N, H", constraints=["H >= 8"])

    def f(x):
        return jax.lax.slice_in_dim(x, 0, 8, axis=1) * 2.0 + jax.lax.slice_in_dim(x, 0, 1, axis=1)

    cm = tensorsmith.compile(f, jax.ShapeDtypeStruct((n, h), jnp.float32))
    rng = np.random.default_rng(0)
    for shape in [(1, 8), (2, 9), (3, 20)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(cm(x)), np.asarray(jax.jit(f)(x)), rtol=1e-6)
    assert cm.cache_info().specializations == 0 and cm.symbolic
    assert "  requires H >= 8  # symbolic_shape: jax.export constraint 'H >= 8'\n" in cm.graph.to_text()
    message = r"input 'x' axis 1 \(H\) = 5, but the model requires H >= 8 \(symbolic_shape"
    with pytest.raises(CallError, match=message):
        cm(np.ones((2, 5), np.float32))
    lm = tensorsmith.load(cm.export(tmp_path / "f.tsx"))
    x = rng.standard_normal((4, 11)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(lm(x)), np.asarray(jax.jit(f)(x)), rtol=1e-6)
    with pytest.raises(CallError, match=message):
        lm(np.ones((2, 5), np.float32))


def test_requirement_origin_and_reason_cannot_inject_lines():
    """A node name or reason with a newline or separator prints as one quoted string and reads back."""
    from tensorsmith.ir.dims import parse_dim
    from tensorsmith.ir.graph import Requirement
    g = ir.parse("graph @m(%x: f32[S,4]) {\n  %0: f32[S,4] = relu(%x)\n  return %0\n}")
    evil = 'x\n  %9: f32[] = constant() {dtype="f32", value=1.0}'
    g2 = g.replace(requires=(Requirement(parse_dim("512-S"), "node\u2028" + evil, evil),))
    text = g2.to_text()
    assert len(text.splitlines()) == len(g.to_text().splitlines()) + 1
    back = ir.parse(text)
    assert back.to_text() == text and len(back.nodes) == 1
    assert back.requires[0].origin == "node\u2028" + evil and back.requires[0].reason == evil
