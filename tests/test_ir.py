"""IR data model: types, text round-trip, save/load, verifier, stats, immutability."""
from __future__ import annotations

import dataclasses
import math
import os
import sys

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from zoo import ZOO, traced  # noqa: E402

from tensorsmith import ir  # noqa: E402
from tensorsmith.ir import (Attrs, Graph, GraphBuilder, Node, TensorType, Value,  # noqa: E402
                            VerificationError, graph_stats)


def roundtrip(g: Graph) -> str:
    text = g.to_text()
    again = ir.parse(text).to_text()
    assert again == text
    return text


def small_graph(batch="N") -> Graph:
    """x[batch,4] @ w[4,3] + b -> relu."""
    b = GraphBuilder("small")
    x = b.input(TensorType((batch, 4), "f32"), "x")
    w = b.param(np.arange(12, dtype=np.float32).reshape(4, 3) - 5, "w")
    bias = b.param(np.array([0.5, 0.0, -1.0], np.float32), "b")
    y = b.op("dot_general", x, w, contracting_dims=((1,), (0,)))
    y = b.op("add", y, b.op("broadcast_in_dim", bias, shape=(1, 3), broadcast_dimensions=(1,)))
    return b.build([b.op("relu", y)])


# --- types --------------------------------------------------------------------------------
def test_tensor_type_dims():
    t = TensorType(("N", np.int64(4), 3), "f32")
    assert t.shape == ("N", 4, 3) and isinstance(t.shape[1], int)
    assert t.rank == 3 and not t.is_static
    assert t.numel({"N": 5}) == 5 * 4 * 3
    assert t.numel() == 4 * 3  # unbound symbols count as 1
    assert t.nbytes({"N": 2}) == 2 * 4 * 3 * 4
    assert TensorType((3, 5), "i4").nbytes() == (15 * 4 + 7) // 8
    assert str(TensorType(("2*N", 8), "bf16")) == "bf16[2*N,8]"
    assert TensorType(("2 * N",), "f32").shape == ("2*N",)
    assert TensorType((2, 3), "f32") == TensorType((2, 3), "f32").with_dtype("f32")
    with pytest.raises(ValueError, match="negative"):
        TensorType((-1,), "f32")
    with pytest.raises(TypeError):
        TensorType((True,), "f32")
    with pytest.raises(ValueError, match="float32"):
        TensorType((1,), "float32")


def test_dtype_names_round_trip():
    for name in ir.DTYPES:
        assert ir.dtype_name(ir.numpy_dtype(name)) == name
    assert ir.dtype_name(ml_dtypes.bfloat16) == "bf16"


def test_symbolic_dim_expressions():
    from tensorsmith.ir.types import dims_equal, eval_dim
    assert eval_dim("2*N+1", {"N": 5}) == 11
    assert eval_dim("(N+1)*M//2", {"N": 3, "M": 3}) == 6
    assert dims_equal("2*N", "N*2") and not dims_equal("N", "M")
    with pytest.raises(ValueError):
        eval_dim("N;import os", {"N": 1})


# --- text form ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_text_round_trip(name):
    g = traced(name)
    text = roundtrip(g)
    assert text.startswith(f"graph @{g.name}(")
    ir.verify(ir.parse(text, dict(g.params)))


@pytest.mark.parametrize("name", ["mlp", "transformer_block"])
def test_zoo_text_round_trip_symbolic_batch(name):
    g = traced(name, batch_dim=True)
    text = roundtrip(g)
    assert "[N," in text
    # composites (jax.nn.relu / softmax / gelu) carry regions that must survive the trip
    assert "composite(" in text and "^jax.nn." in text


def test_round_trip_quoted_names_regions_and_all_attr_kinds():
    b = GraphBuilder("my model")
    x = b.input(TensorType(("N", 4), "f32"), 'in put "q"')
    w = b.param(np.ones((4, 4), np.float32), "w/with space")
    y = b.op("dot_general", x, w, contracting_dims=((1,), (0,)))
    inner = GraphBuilder("body.region")
    bi = inner.input(TensorType(("N", 4), "f32"), "b0")
    body = inner.build([inner.op("relu", inner.op("neg", bi))])
    attrs = {"name": 'odd "str"\n#}', "i": -3, "f": 1e-5, "big": 1.5e300, "ninf": float("-inf"),
             "nan": float("nan"), "t": True, "fa": False, "nn": None, "one": (1,), "empty": (),
             "nested": ((1, 2), (None, "s"), ()), "neg0": -0.0}
    out = Value("c", TensorType(("N", 4), "f32"))
    node = Node("composite", (y,), (out,), Attrs(attrs), (body,), "file.py:3 (fn)")
    r = Value("r", TensorType(("4*N",), "f32"))  # a symbolic-expression dim
    flat = Node("reshape", (out,), (r,), Attrs({"shape": ("4*N",)}))
    g = Graph("my model", b.inputs, (r,), b.nodes + [node, flat], b.params)
    ir.verify(g)
    text = roundtrip(g)
    assert '@"my model"(%"in put \\"q\\""' in text
    back = ir.parse(text).nodes[1]
    assert back.loc == "file.py:3 (fn)"
    assert math.isnan(back.attrs["nan"])
    got = {k: v for k, v in back.attrs.items() if k != "nan"}
    want = {k: v for k, v in attrs.items() if k != "nan"}
    assert got == want
    assert math.copysign(1.0, back.attrs["neg0"]) == -1.0
    assert type(back.attrs["i"]) is int and type(back.attrs["f"]) is float


def test_parse_errors_name_the_line():
    text = small_graph().to_text().replace("relu(", "relu(%nope, ")
    with pytest.raises(ir.ParseError, match=r"line \d+: use of undefined value 'nope'"):
        ir.parse(text)
    with pytest.raises(ir.ParseError, match="line 1"):
        ir.parse("graph small(%x: f32[2]) {\n return %x\n}\n")


# --- save / load --------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    g = traced("cnn")
    path = ir.save(g, tmp_path / "cnn.ir")
    g2 = ir.load(path)
    assert g2.to_text() == g.to_text()
    assert list(g2.params) == list(g.params)
    for k in g.params:
        np.testing.assert_array_equal(g2.params[k], g.params[k])
        assert g2.params[k].dtype == g.params[k].dtype


def test_save_load_low_precision_params(tmp_path):
    rng = np.random.default_rng(0)
    b = GraphBuilder("lowp")
    x = b.input(TensorType(("N", 4), "bf16"), "x")
    w = b.param(rng.standard_normal((4, 3)).astype(ml_dtypes.bfloat16), "w")
    q = b.param(rng.integers(-8, 8, (4, 3)).astype(ml_dtypes.int4), "q")
    f8 = b.param(rng.standard_normal(6).astype(ml_dtypes.float8_e4m3fn), "f8")
    u4 = b.param(rng.integers(0, 16, (5,)).astype(ml_dtypes.uint4), "u4")
    y = b.op("dot_general", x, b.op("mul", w, b.op("convert", q, dtype="bf16")),
             contracting_dims=((1,), (0,)))
    g = b.build([y])
    g2 = ir.load(ir.save(g, tmp_path / "lowp"))
    assert g2.to_text() == g.to_text()
    for k, arr in g.params.items():
        assert g2.params[k].dtype == arr.dtype, k
        np.testing.assert_array_equal(g2.params[k].astype(np.float32), arr.astype(np.float32))
    assert "i4[4,3]" in g2.to_text() and "f8e4m3fn[6]" in g2.to_text()
    del f8, u4


def test_load_without_weights_declares_params(tmp_path):
    g = small_graph()
    (tmp_path / "m.ir").write_text(g.to_text())
    with pytest.raises(FileNotFoundError, match="weights"):
        ir.load(tmp_path / "m.ir")
    decl = ir.parse(g.to_text())
    assert decl.param("w").type == g.param("w").type


# --- verifier -----------------------------------------------------------------------------
def _planted():
    g = small_graph()
    dot, bcast, add, relu = g.nodes
    bad_out = Value(dot.outputs[0].name, TensorType(("N", 5), "f32"))
    return g, {
        "wrong output shape": (g.replace(nodes=(dot.replace(outputs=(bad_out,)), bcast, add, relu)),
                               dot, "type", "declared f32[N,5]"),
        "use before definition": (g.replace(nodes=(dot, add, bcast, relu)), add, "order",
                                  "used before it is defined"),
        "missing param": (g.with_params({}, drop=["w"]), dot, "param", "%w is not defined"),
        "unknown op": (g.replace(nodes=(dot, bcast, add, relu.replace(op="relux"))),
                       relu, "op", "unknown op 'relux' (did you mean 'relu'?)"),
        "unknown attr": (g.replace(nodes=(dot, bcast, add, relu.replace(attrs=Attrs({"alpha": 1.0})))),
                         relu, "attr", "unknown attribute 'alpha'"),
        "attr of wrong kind": (g.replace(nodes=(dot, bcast.replace(attrs=bcast.attrs.set(shape="13")), add,
                                                relu)), bcast, "attr", "'shape'"),
        "output type": (g.replace(outputs=(Value(relu.outputs[0].name, TensorType(("N", 3), "f16")),)),
                        None, "use-type", "graph output %"),
        "missing attr": (g.replace(nodes=(dot.replace(attrs=Attrs()), bcast, add, relu)), dot, "attr",
                         "requires attribute 'contracting_dims'"),
    }


@pytest.mark.parametrize("case", list(_planted()[1]))
def test_verifier_rejects_planted_errors(case):
    g, cases = _planted()
    ir.verify(g)  # the unbroken graph is fine
    bad, node, rule, text = cases[case]
    with pytest.raises(VerificationError) as info:
        ir.verify(bad, context="pass 'demo'")
    msg = str(info.value)
    assert msg.startswith("pass 'demo': ")
    if node is not None:  # errors about one node name it: its output, op and rule
        op = "relux" if case == "unknown op" else node.op
        assert f"node %{node.outputs[0].name} = {op}(" in msg
    assert f"rule '{rule}'" in msg and info.value.rule == rule
    assert text in msg


def test_verifier_checks_regions_and_ssa():
    g = traced("mlp")
    comp = next(n for n in g.nodes if n.op == "composite")
    body = comp.body
    broken_body = body.replace(nodes=(body.nodes[0].replace(op="relux"),) + body.nodes[1:])
    i = g.nodes.index(comp)
    bad = g.replace(nodes=g.nodes[:i] + (comp.replace(regions=(broken_body,)),) + g.nodes[i + 1:])
    with pytest.raises(VerificationError, match=r"in region \^jax\.nn\.relu: .*relux"):
        ir.verify(bad)
    dup = g.replace(nodes=g.nodes + (g.nodes[0],))
    with pytest.raises(VerificationError, match="defined twice"):
        ir.verify(dup)


def test_verify_all_zoo_graphs():
    for name in ZOO:
        ir.verify(traced(name))
        ir.verify(traced(name, batch_dim=True))


# --- stats --------------------------------------------------------------------------------
def test_graph_stats_dense_by_hand():
    g = small_graph()
    dot = g.nodes[0]
    stats = graph_stats(g, {"N": 7})
    # M is the bound batch symbol, K and N come from the operand types
    M, K, N = 7, dot.inputs[0].type.shape[1], g.param("w").type.shape[1]
    dense = 2 * M * N * K
    elementwise = 2 * M * N  # add + relu, one op per output element
    assert stats.flops == dense + elementwise
    assert stats.nodes == len(g.nodes) and stats.ops["dot_general"] == 1
    assert stats.params == 2
    assert stats.param_elems == sum(a.size for a in g.params.values())
    assert stats.param_bytes == sum(a.nbytes for a in g.params.values())
    zeros = sum(int((a == 0).sum()) for a in g.params.values())
    assert stats.param_zeros == zeros and stats.sparsity == pytest.approx(zeros / stats.param_elems)
    # unbound batch counts as 1
    assert graph_stats(g).flops == 2 * 1 * N * K + 2 * 1 * N


def test_graph_stats_mlp_and_cnn_match_shapes():
    for name in ["mlp", "cnn"]:
        g = traced(name)
        expected = 0
        for n in g.walk():
            if n.op == "dot_general":
                (lc, _), out = n.attrs["contracting_dims"], n.outputs[0].type
                k = math.prod(n.inputs[0].type.shape[a] for a in lc)
                expected += 2 * out.numel() * k
            elif n.op == "conv":
                w = n.inputs[1].type.shape  # HWIO: k = H*W*I (per group)
                expected += 2 * n.outputs[0].type.numel() * w[0] * w[1] * w[2]
        heavy = sum(graph_stats(g).ops.get(op, 0) for op in ("dot_general", "conv"))
        assert heavy >= 2
        total = graph_stats(g).flops
        # everything else is element-wise/reductions: at most a few flops per element
        assert expected <= total < expected * 1.5, name


def test_graph_stats_symbolic_contracting_dim():
    b = GraphBuilder("sym")
    x = b.input(TensorType((3, "K"), "f32"), "x")
    y = b.input(TensorType(("K", 5), "f32"), "y")
    g = b.build([b.op("dot_general", x, y, contracting_dims=((1,), (0,)))])
    assert graph_stats(g, {"K": 11}).flops == 2 * 3 * 5 * 11


# --- immutability -------------------------------------------------------------------------
def test_params_are_read_only_copies():
    w = np.ones((4, 3), np.float32)
    ro_view = w[:, :2]
    ro_view.flags.writeable = False  # a read-only view of a writable array is not enough
    b = GraphBuilder("m")
    x = b.input(TensorType((2, 4), "f32"), "x")
    b.param(w, "w")
    b.param(ro_view, "v")
    g = b.build([x])
    w[:] = 7.0
    np.testing.assert_array_equal(g.params["w"], np.ones((4, 3)))
    np.testing.assert_array_equal(g.params["v"], np.ones((4, 2)))
    with pytest.raises(ValueError):
        g.params["w"][0, 0] = 3.0
    with pytest.raises(TypeError):
        g.params["w"] = np.zeros(3)  # type: ignore[index]
    # sharing between graphs is fine: frozen arrays are reused, not copied
    assert g.with_params({}).params["w"] is g.params["w"]


def test_graph_and_nodes_cannot_be_mutated():
    g = small_graph()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes[0].op = "add"  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.nodes[0].attrs["contracting_dims"] = ((0,), (0,))  # type: ignore[index]
    assert isinstance(g.nodes, tuple) and isinstance(g.inputs, tuple)
    with pytest.raises(TypeError):
        Attrs({"bad": np.zeros((100,))})
    before = g.to_text()
    g.replace(nodes=g.nodes[:1])
    assert g.to_text() == before


def test_a_composite_whose_body_reads_a_param_is_among_its_users():
    g = ir.parse("""graph @main(%x: f32[4]) {
  param @w: f32[4]
  %3: f32[4] = composite(%x) {name="scale"} {
    ^scale(%0: f32[4]):
      %1: f32[4] = mul(%0, @w)
      %2: f32[4] = add(%1, @w)
      return %2
  }
  %4: f32[4] = sub(%3, @w)
  return %4
}
""", params={"w": np.ones(4, np.float32)})
    comp, sub = g.nodes
    assert [v.name for v in comp.region_reads] == ["w", "w"]
    assert [n.op for n in g.users["w"]] == ["composite", "composite", "sub"]
    assert g.num_uses(g.param("w")) == 3
    assert [n.op for n in g.users["x"]] == ["composite"]
