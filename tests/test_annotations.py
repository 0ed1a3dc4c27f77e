"""The annotation table: printed, parsed, saved, verified, and carried by the rewrite driver."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tensorsmith
from tensorsmith import ir
from tensorsmith.frontends.jax import trace
from tensorsmith.ir import Annotation
from tensorsmith.ir.parser import ParseError
from tensorsmith.ir.verify import VerificationError

RNG = np.random.default_rng(0)


def _dense(seed=0):
    rng = np.random.default_rng(seed)
    p = {"w": rng.normal(size=(6, 8)).astype(np.float32),
         "b": rng.normal(size=(8,)).astype(np.float32)}
    fn = lambda p, x: jnp.tanh(x @ p["w"] + p["b"])  # noqa: E731
    return fn, p, trace(fn, np.ones((2, 6), np.float32), params=p)


def _masked(g):
    m = np.abs(g.params["w"]) > 0.5
    return m, g.with_annotations([
        Annotation("w", "mask", {"pattern": "unstructured", "sparsity": 0.4}, m),
        Annotation(g.outputs[0].name, "quant", {"dtype": "i8", "scale": 0.25, "axis": None}),
    ])


def test_printed_parsed_and_saved_with_the_weights(tmp_path):
    _, _, g = _dense()
    m, g2 = _masked(g)
    text = g2.to_text()
    assert 'annotate @w mask {pattern="unstructured", sparsity=0.4}: bool[6,8]' in text
    assert f'annotate %{g.outputs[0].name} quant {{axis=none, dtype="i8", scale=0.25}}' in text
    assert ir.parse(text).to_text() == text  # declared only: the payload is abstract
    path = ir.save(g2, tmp_path / "g.tsir")
    back = ir.load(path)
    assert back.to_text() == text
    np.testing.assert_array_equal(back.annotation("w", "mask").array, m)
    assert back.annotation(g.outputs[0].name, "quant").attrs["scale"] == 0.25
    assert [a.kind for a in back.annotations_of("mask")] == ["mask"]


def test_a_later_annotation_of_the_same_kind_replaces_the_earlier():
    _, _, g = _dense()
    g2 = g.with_annotations([Annotation("w", "mask", {"sparsity": 0.1})])
    g3 = g2.with_annotations([Annotation("w", "mask", {"sparsity": 0.9})])
    assert [a.attrs["sparsity"] for a in g3.annotations] == [0.9]
    assert g3.with_annotations(drop=[("w", "*")]).annotations == ()


def test_parse_errors_name_the_line_and_target():
    _, _, g = _dense()
    _, g2 = _masked(g)
    text = g2.to_text().replace("annotate @w mask", "annotate @wx mask")
    with pytest.raises(ParseError, match=r"line \d+: annotation mask names 'wx'"):
        ir.parse(text)
    good = g2.to_text()
    with pytest.raises(ParseError, match="declared bool\\[6,8\\] but its array is bool\\[6\\]"):
        ir.parse(good, dict(g2.params), {("w", "mask"): np.ones(6, bool)})


def test_the_verifier_refuses_a_mask_of_the_wrong_shape_or_a_missing_target():
    _, _, g = _dense()
    with pytest.raises(VerificationError, match="mask on 'w' is bool\\[8,6\\]"):
        ir.verify(g.with_annotations([Annotation("w", "mask", {}, np.ones((8, 6), bool))]))
    with pytest.raises(VerificationError, match="names 'nope'"):
        ir.verify(g.with_annotations([Annotation("nope", "quant", {})]))


def test_dropping_a_param_drops_its_annotations():
    _, _, g = _dense()
    _, g2 = _masked(g)
    assert g2.with_params({}, drop=["w"]).annotation("w", "mask") is None


def test_default_pipeline_keeps_annotations_and_moves_them_with_replaced_values():
    # x @ w computed twice: CSE replaces the second product by the first; a quant annotation on
    # the replaced value moves to the value that stands for it now.
    rng = np.random.default_rng(1)
    p = {"w": rng.normal(size=(6, 8)).astype(np.float32)}
    fn = lambda p, x: (x @ p["w"]) * 2.0 + jnp.tanh(x @ p["w"])  # noqa: E731
    x = rng.normal(size=(2, 6)).astype(np.float32)
    g = trace(fn, x, params=p)
    dots = [n for n in g.nodes if n.op == "dot_general"]
    assert len(dots) == 2
    mask = np.abs(p["w"]) > 0.3
    g = g.with_annotations([Annotation("w", "mask", {"sparsity": 0.3}, mask),
                            Annotation(dots[1].output.name, "quant", {"dtype": "i8"})])
    cm = tensorsmith.compile(g, passes="default")
    out = cm.graph
    kept = [n for n in out.nodes if n.op == "dot_general"]
    assert len(kept) == 1
    np.testing.assert_array_equal(out.annotation("w", "mask").array, mask)
    assert out.annotation(kept[0].output.name, "quant").attrs["dtype"] == "i8"
    np.testing.assert_allclose(np.asarray(cm(x)[0]), np.asarray(jax.jit(fn)(p, x)), rtol=1e-5,
                               atol=1e-5)


def test_a_dead_value_takes_its_annotations_with_it():
    rng = np.random.default_rng(2)
    p = {"w": rng.normal(size=(6, 8)).astype(np.float32)}
    fn = lambda p, x: (jnp.sin(x) * 0.0 + 1.0, x @ p["w"])  # noqa: E731
    g = trace(fn, np.ones((2, 6), np.float32), params=p)
    sin = next(n for n in g.nodes if n.op == "sin")
    g = g.with_annotations([Annotation(sin.output.name, "quant", {"dtype": "i8"})])
    # fold-constants cannot drop sin (x*0 is not 0 for inf), so annotate something DCE removes:
    # a value nothing reads once the graph is cut to its second output.
    cut = g.replace(outputs=g.outputs[1:])
    out = tensorsmith.compile(cut, passes="dce").graph
    assert out.annotations == ()


def test_fold_batchnorm_carries_a_mask_onto_the_folded_weight():
    rng = np.random.default_rng(3)
    p = {"w": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
         "g": rng.uniform(0.5, 2, size=4).astype(np.float32),
         "m": rng.normal(size=4).astype(np.float32),
         "v": rng.uniform(0.5, 2, size=4).astype(np.float32)}

    def fn(p, x):
        y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y - p["m"]) * jax.lax.rsqrt(p["v"] + 1e-5) * p["g"]

    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    g = trace(fn, x, params=p)
    mask = np.abs(p["w"]) > 0.4
    g = g.with_annotations([Annotation("w", "mask", {"sparsity": 0.3}, mask)])
    cm = tensorsmith.compile(g.with_params({"w": p["w"] * mask}), passes="fold-batchnorm,dce")
    masks = cm.graph.annotations_of("mask")
    assert len(masks) == 1 and masks[0].target != "w"
    folded = cm.graph.params[masks[0].target]
    np.testing.assert_array_equal(folded[~mask], 0)
    np.testing.assert_array_equal(masks[0].array, mask)
    want = fn({**p, "w": p["w"] * mask}, x)
    np.testing.assert_allclose(np.asarray(cm(x)[0]), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_annotation_rejects_bad_names():
    with pytest.raises(TypeError, match="kind must be an identifier"):
        Annotation("w", "not a kind")
    with pytest.raises(TypeError, match="target must be a non-empty name"):
        Annotation("", "mask")
