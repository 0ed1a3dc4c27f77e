"""Pipeline strings: parsing, validation before anything runs, and the pass registry."""
import numpy as np
import pytest

import tensorsmith
from tensorsmith.passes import PASSES, PassOptionError, format_pipeline, parse_pipeline


def test_pipeline_string_round_trips_through_steps():
    steps = parse_pipeline("canonicalize,fold-constants{max_bytes=1024},dce")
    assert [s.name for s in steps] == ["canonicalize", "fold-constants", "dce"]
    assert steps[1].options["max_bytes"] == 1024
    assert format_pipeline(steps) == "canonicalize,fold-constants{max_bytes=1024},dce"
    assert format_pipeline(parse_pipeline(format_pipeline(steps))) == format_pipeline(steps)


def test_list_options_parse_from_brackets_and_from_python():
    from tensorsmith.passes import Option, register_pass
    if "test-list-option" not in PASSES:
        @register_pass("test-list-option", options=[
            Option("skip", list, (), "layer names"),
            Option("bits", list, (8,), "widths", item=int, range=(2, 8))])
        def _t(graph, ctx, skip=(), bits=(8,)):
            """Test pass with list options."""
            return graph
    steps = parse_pipeline("test-list-option{skip=[fc,layer2.0.conv],bits=[4,8]},dce")
    assert steps[0].options == {"skip": ("fc", "layer2.0.conv"), "bits": (4, 8)}
    assert [s.name for s in steps] == ["test-list-option", "dce"]
    text = format_pipeline(steps)
    assert text == "test-list-option{skip=[fc,layer2.0.conv],bits=[4,8]},dce"
    assert parse_pipeline(text) == steps
    assert parse_pipeline([("test-list-option", {"skip": ["fc"]})])[0].options["skip"] == ("fc",)
    assert parse_pipeline("test-list-option{skip=fc}")[0].options["skip"] == ("fc",)  # one item
    assert parse_pipeline("test-list-option{skip=[]}")[0].options["skip"] == ()
    with pytest.raises(PassOptionError, match="option 'bits': 16 is outside the allowed range"):
        parse_pipeline("test-list-option{bits=[4,16]}")
    with pytest.raises(PassOptionError, match="option 'bits': 'x' is not a valid int"):
        parse_pipeline("test-list-option{bits=[x]}")
    with pytest.raises(TypeError, match="default is a tuple"):
        register_pass("test-bad-list", options=[Option("skip", list, [], "x")])(lambda g, c: g)


def test_named_pipeline_expands():
    assert [s.name for s in parse_pipeline("default")] == \
        [s.name for s in parse_pipeline(tensorsmith.passes.PIPELINES["default"])]


@pytest.mark.parametrize("spec, message", [
    ("canonicalise", "did you mean 'canonicalize'"),
    ("fold-constants{max_byte=3}", "did you mean 'max_bytes'"),
    ("fold-constants{max_bytes=-1}", "outside the allowed range"),
    ("fold-constants{max_bytes=lots}", "not a valid int"),
    ("canonicalize{disable=sqare}", "did you mean 'square'"),
    ("cse{params=maybe}", "not a valid bool"),
    ("dce{", "'}' is missing"),
    ("canonicalize{disable=[square}", "unbalanced '}'"),
    ("canonicalize{disable=[square,neg-neg,sqare]}", "no pattern 'sqare'.*did you mean 'square'"),
])
def test_bad_pipelines_are_refused_with_the_closest_name(spec, message):
    with pytest.raises(PassOptionError, match=message):
        parse_pipeline(spec)


def test_compile_refuses_a_bad_pipeline_before_tracing():
    traced = []

    def fn(x):
        traced.append(1)
        return x * 2

    with pytest.raises(PassOptionError, match="did you mean 'dce'"):
        tensorsmith.compile(fn, np.ones(3, np.float32), passes="canonicalize,dcee")
    assert traced == []  # nothing ran


def test_every_pass_documents_itself_and_its_options():
    for info in PASSES.values():
        assert info.doc, f"pass {info.name} has no one-line docstring"
        for opt in info.options:
            assert opt.doc, f"pass {info.name} option {opt.name} is undocumented"
            assert opt.parse(opt.default, info.name) == opt.default


def test_pass_data_reaches_the_pass_and_missing_data_is_refused_up_front():
    from tensorsmith.passes import MissingPassData, register_pass
    seen = {}

    if "test-needs-calibration" not in PASSES:
        @register_pass("test-needs-calibration", needs=("calibration",))
        def _needs(graph, ctx):
            """Test-only pass: records the calibration batches it was given."""
            seen["batches"] = ctx.require("calibration")
            seen["outputs"] = ctx.run(graph, *ctx.calibration[0])
            return graph

    def fn(x):
        return x * 3.0

    x = np.arange(4, dtype=np.float32)
    with pytest.raises(MissingPassData, match="calibration=") as e:
        tensorsmith.compile(fn, x, passes="dce,test-needs-calibration")
    assert "test-needs-calibration" in str(e.value)
    tensorsmith.compile(fn, x, passes="test-needs-calibration", calibration=[(x,), (x + 1,)])
    assert len(seen["batches"]) == 2
    np.testing.assert_allclose(seen["outputs"][0], x * 3.0)


def test_a_pass_that_breaks_the_ir_is_named_with_the_node_and_rule():
    from tensorsmith.ir import Value, VerificationError
    from tensorsmith.passes import register_pass

    if "test-break-types" not in PASSES:
        @register_pass("test-break-types")
        def _break(graph, ctx):
            """Test-only pass: declares a wrong output type on the first node."""
            n = graph.nodes[0]
            bad = Value(n.outputs[0].name, n.outputs[0].type.with_shape((99,)))
            return graph.replace(nodes=(n.replace(outputs=(bad,)),) + graph.nodes[1:])

    def fn(x):
        return x * 2.0 + 1.0

    x = np.ones(4, np.float32)
    with pytest.raises(VerificationError) as e:
        tensorsmith.compile(fn, x, passes="canonicalize,test-break-types")
    msg = str(e.value)
    assert "after pass 'test-break-types' (step 2)" in msg
    assert "rule 'type'" in msg and "f32[99]" in msg and "%" in msg
    # verify=False skips the check: the graph with the wrong declared type gets through
    cm = tensorsmith.compile(fn, x, passes="test-break-types", verify=False)
    assert cm.graph.nodes[0].outputs[0].type.shape == (99,)
