"""Bad and hostile ONNX files: refused with a tensorsmith error naming the culprit, never a
wrong model, a raw Python exception or an unbounded allocation (issue 15)."""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import tensorsmith
from tensorsmith.frontends.onnx import OnnxImportError, OnnxLoadError, import_onnx
from tensorsmith.frontends.onnx import converter as converter_module


def model(nodes, inputs, outputs, inits=(), opset=17, functions=(), extra_opsets=(), ir=8):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset), *extra_opsets],
                     functions=list(functions))
    m.ir_version = ir
    return m


def tinfo(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


def ort_refuses(m: onnx.ModelProto) -> bool:
    try:
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001  (any load failure is a refusal)
        return True
    return False


# --- external data: one checked read per tensor object ----------------------------------------
def _external(tensor: onnx.TensorProto, location: str, offset: int, length: int | None = None):
    tensor.ClearField("raw_data")
    tensor.data_location = T.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="offset", value=str(offset))
    if length is not None:
        tensor.external_data.add(key="length", value=str(length))
    return tensor


def _save(tmp_path, m, blobs: dict[str, bytes] = {}, folder="m"):
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    for name, data in blobs.items():
        (d / name).write_bytes(data)
    p = d / "model.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def test_two_unnamed_external_constants_get_their_own_bytes(tmp_path):
    a = np.array([1, 2, 3], np.float32)
    b = np.array([10, 20, 30], np.float32)
    ta = _external(numpy_helper.from_array(a, ""), "w.bin", 0, 12)
    tb = _external(numpy_helper.from_array(b, ""), "w.bin", 12, 12)
    m = model([h.make_node("Constant", [], ["ka"], value=ta),
               h.make_node("Constant", [], ["kb"], value=tb),
               h.make_node("Add", ["x", "ka"], ["s"]),
               h.make_node("Mul", ["s", "kb"], ["y"])],
              [tinfo("x", [3])], [tinfo("y", [3])])
    p = _save(tmp_path, m, {"w.bin": a.tobytes() + b.tobytes()})
    x = np.array([0.5, -1, 2], np.float32)
    (y,) = tensorsmith.compile(str(p))(x)
    np.testing.assert_array_equal(np.asarray(y), (x + a) * b)
    (want,) = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(np.asarray(y), want)


def test_initializer_and_constant_sharing_a_name_get_their_own_bytes(tmp_path):
    w = np.array([1, 2], np.float32)
    c = np.array([7, 9], np.float32)
    tw = _external(numpy_helper.from_array(w, "w"), "d.bin", 0, 8)
    tc = _external(numpy_helper.from_array(c, "w"), "d.bin", 8, 8)  # the Constant's tensor
    m = model([h.make_node("Constant", [], ["k"], value=tc),
               h.make_node("Sub", ["w", "k"], ["y"])],
              [], [tinfo("y", [2])], [tw])
    p = _save(tmp_path, m, {"d.bin": w.tobytes() + c.tobytes()})
    (y,) = tensorsmith.compile(str(p))()
    np.testing.assert_array_equal(np.asarray(y), w - c)


def _sparse_model(values_location: str, dims=(2, 3), idx=(1, 5)):
    values = np.array([4.0, 8.0], np.float32)
    v = _external(numpy_helper.from_array(values, "sv"), values_location, 0, 8)
    i = numpy_helper.from_array(np.array(idx, np.int64), "si")
    sp = h.make_sparse_tensor(v, i, list(dims))
    m = model([h.make_node("Constant", [], ["k"], sparse_value=sp),
               h.make_node("Add", ["x", "k"], ["y"])],
              [tinfo("x", list(dims))], [tinfo("y", list(dims))])
    return m, values


def test_sparse_external_values_are_read_from_the_models_folder(tmp_path, monkeypatch):
    m, values = _sparse_model("vals.bin")
    p = _save(tmp_path, m, {"vals.bin": values.tobytes()})
    # a file of that name in the working directory must not be what is read
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "vals.bin").write_bytes(np.array([-1, -1], np.float32).tobytes())
    monkeypatch.chdir(elsewhere)
    x = np.zeros((2, 3), np.float32)
    (y,) = tensorsmith.compile(str(p))(x)
    want = np.zeros(6, np.float32)
    want[[1, 5]] = values
    np.testing.assert_array_equal(np.asarray(y), want.reshape(2, 3))


def test_sparse_external_values_outside_the_folder_are_refused(tmp_path, monkeypatch):
    m, values = _sparse_model("../secret.bin")
    (tmp_path / "secret.bin").write_bytes(values.tobytes())
    p = _save(tmp_path, m)
    monkeypatch.chdir(tmp_path / "m")
    with pytest.raises(OnnxLoadError, match=r"sparse values.*\.\./secret\.bin.*outside"):
        import_onnx(p)


def test_sparse_index_outside_the_dims_is_an_import_error(tmp_path):
    m, values = _sparse_model("vals.bin", idx=(1, 6))  # 6 >= 2*3
    p = _save(tmp_path, m, {"vals.bin": values.tobytes()})
    with pytest.raises(OnnxImportError, match="index outside"):
        import_onnx(p)


def _one_external_initializer(tmp_path, dims, length, data: bytes, offset=0, location="w.bin"):
    t = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    del t.dims[:]
    t.dims.extend(dims)
    _external(t, location, offset, length)
    m = model([h.make_node("Identity", ["w"], ["y"])], [], [tinfo("y", None)], [t])
    return _save(tmp_path, m, {"w.bin": data} if data is not None else {})


def test_misspelled_external_data_key_is_refused_not_read_from_offset_zero(tmp_path):
    a, b = np.array([1, 2], np.float32), np.array([3, 4], np.float32)
    ta = _external(numpy_helper.from_array(a, "a"), "w.bin", 0, 8)
    tb = _external(numpy_helper.from_array(b, "b"), "w.bin", 8, 8)
    tb.external_data[1].key = "offs`t"  # a damaged key: the offset would silently become 0
    m = model([h.make_node("Sub", ["a", "b"], ["y"])], [], [tinfo("y", [2])], [ta, tb])
    p = _save(tmp_path, m, {"w.bin": a.tobytes() + b.tobytes()})
    with pytest.raises(OnnxLoadError, match=r"initializer 'b' has external data key 'offs`t'"):
        import_onnx(p)


def test_absurd_external_length_is_refused_before_allocating(tmp_path):
    p = _one_external_initializer(tmp_path, [2], 1 << 60, b"\0" * 8)
    with pytest.raises(OnnxLoadError, match=r"initializer 'w' declares \[2\] FLOAT \(8 bytes\)"):
        import_onnx(p)


def test_absurd_external_dims_are_refused_before_allocating(tmp_path):
    p = _one_external_initializer(tmp_path, [1 << 21, 1 << 20], None, b"\0" * 8)
    with pytest.raises(OnnxImportError, match=r"'w'.*2\*\*40"):
        import_onnx(p)


def test_external_range_past_the_end_of_the_file_is_refused(tmp_path):
    p = _one_external_initializer(tmp_path, [2], 8, b"\0" * 8, offset=4)
    with pytest.raises(OnnxLoadError, match=r"'w'.*truncated.*4\.\.12.*has 8"):
        import_onnx(p)


def test_external_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(2, np.float32).tobytes())
    p = _one_external_initializer(tmp_path, [2], 8, None, location="link.bin")
    os.symlink(tmp_path / "secret.bin", p.parent / "link.bin")
    with pytest.raises(OnnxLoadError, match=r"link\.bin.*outside"):
        import_onnx(p)


# --- attributes against the op's schema --------------------------------------------------------
def _conv(**attrs):
    w = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    return model([h.make_node("Conv", ["x", "w"], ["y"], name="conv1", **attrs)],
                 [tinfo("x", [1, 1, 8, 8])], [tinfo("y", None)], [w])


def test_misspelled_attribute_is_refused_with_the_closest_name():
    m = _conv(stridez=[2, 2])
    assert ort_refuses(m)
    with pytest.raises(OnnxImportError,
                       match=r"'conv1' \(Conv\) has attribute 'stridez'.*did you mean 'strides'"):
        tensorsmith.compile(m)


def test_attribute_of_the_wrong_type_is_refused():
    m = _conv(strides=[2.0, 2.0])
    assert ort_refuses(m)
    with pytest.raises(OnnxImportError, match=r"'conv1' \(Conv\) attribute 'strides' is FLOATS.*INTS"):
        import_onnx(m)


def test_missing_required_attribute_is_refused():
    m = model([h.make_node("Concat", ["x", "x"], ["y"], name="cat")], [tinfo("x", [2])],
              [tinfo("y", [4])])
    with pytest.raises(OnnxImportError, match=r"'cat' \(Concat\) lacks required.*'axis'"):
        import_onnx(m)


def test_unknown_attribute_of_a_local_function_call_is_refused():
    body = h.make_node("LeakyRelu", ["X"], ["Y"])
    body.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="slope",
                                              type=onnx.AttributeProto.FLOAT))
    fn = h.make_function("custom.ops", "MyLeaky", ["X"], ["Y"], [body],
                         opset_imports=[h.make_opsetid("", 17)], attributes=["slope"])
    m = model([h.make_node("MyLeaky", ["x"], ["y"], name="act", domain="custom.ops", slop=0.25)],
              [tinfo("x", [4])], [tinfo("y", [4])], functions=[fn],
              extra_opsets=[h.make_opsetid("custom.ops", 1)])
    with pytest.raises(OnnxImportError, match=r"'act' \(MyLeaky\).*'slop'.*did you mean 'slope'"):
        import_onnx(m)


def test_attribute_without_a_type_is_refused():
    m = _conv(strides=[2, 2])
    m.graph.node[0].attribute[0].type = onnx.AttributeProto.UNDEFINED
    assert ort_refuses(m)
    with pytest.raises(OnnxImportError, match=r"'strides' has no type"):
        import_onnx(m)


# --- graph validity: SSA, names, dims -----------------------------------------------------------
def _f32(name, *values):
    return numpy_helper.from_array(np.array(values, np.float32), name)


INVALID_GRAPHS = {
    "two initializers with one name": (
        model([h.make_node("Add", ["x", "a"], ["y"])], [tinfo("x", [2])], [tinfo("y", [2])],
              [_f32("a", 1, 2), _f32("a", 3, 4)]),
        r"initializer 'a' is defined twice"),
    "two nodes writing one output": (
        model([h.make_node("Relu", ["x"], ["y"], name="r"), h.make_node("Neg", ["x"], ["y"], name="n")],
              [tinfo("x", [2])], [tinfo("y", [2])]),
        r"node 'n' \(Neg\) writes 'y', which is already another node's output"),
    "node output shadowing a graph input": (
        model([h.make_node("Relu", ["x"], ["x"], name="r")], [tinfo("x", [2])], [tinfo("x", [2])]),
        r"node 'r' \(Relu\) writes 'x', which is already a graph input"),
    "node output shadowing an initializer": (
        model([h.make_node("Relu", ["x"], ["a"], name="r"), h.make_node("Add", ["x", "a"], ["y"])],
              [tinfo("x", [2])], [tinfo("y", [2])], [_f32("a", 1, 2)]),
        r"node 'r' \(Relu\) writes 'a', which is already an initializer"),
    "input used before its definition": (
        model([h.make_node("Add", ["x", "a"], ["y"], name="add"), h.make_node("Relu", ["x"], ["a"])],
              [tinfo("x", [2])], [tinfo("y", [2])]),
        r"node 'add' \(Add\) reads 'a', which is not defined before it"),
    "negative dim": (
        model([h.make_node("Relu", ["x"], ["y"])], [tinfo("x", [-3])], [tinfo("y", None)]),
        r"graph input 'x' has a negative dim \(-3\)"),
    "absurd dims": (
        model([h.make_node("Relu", ["x"], ["y"])], [tinfo("x", [1 << 30, 1 << 30])],
              [tinfo("y", None)]),
        r"graph input 'x' declares 1152921504606846976 elements"),
    "value without an element type": (
        model([h.make_node("Relu", ["x"], ["y"])], [tinfo("x", [2])], [tinfo("y", [2], 0)]),
        r"value 'y' has no valid element type \(0\)"),
    "value with an unknown element type code": (
        model([h.make_node("Relu", ["x"], ["y"])], [tinfo("x", [2])], [tinfo("y", [2], 81)]),
        r"value 'y' has no valid element type \(81\)"),
    "sub-graph without a name": (
        model([h.make_node("If", ["c"], ["y"], name="if1",
                           then_branch=h.make_graph([h.make_node("Neg", ["x"], ["t"])], "",
                                                    [], [tinfo("t", [2])]),
                           else_branch=h.make_graph([h.make_node("Relu", ["x"], ["e"])], "e",
                                                    [], [tinfo("e", [2])]))],
              [tinfo("x", [2]), tinfo("c", [], T.BOOL)], [tinfo("y", [2])]),
        r"if1/then_branch/ has no name"),
    "input type the op does not take": (
        model([h.make_node("Relu", ["x"], ["y"], name="r")], [tinfo("x", [3], T.UINT8)],
              [tinfo("y", None, T.UINT8)]),
        r"type checking.*Relu.*tensor\(uint8\)"),
}


@pytest.mark.parametrize("case", sorted(INVALID_GRAPHS))
def test_invalid_graph_is_refused_naming_the_value(case):
    m, message = INVALID_GRAPHS[case]
    if case not in ("two initializers with one name", "negative dim", "absurd dims",
                    "input used before its definition"):
        assert ort_refuses(m)  # (onnxruntime picks one reading of those: the spec forbids them)
    with pytest.raises(OnnxImportError, match=message):
        tensorsmith.compile(m)


def test_sub_graph_writing_an_outer_name_is_refused():
    then = h.make_graph([h.make_node("Neg", ["x"], ["x"], name="inner")], "then", [],
                        [tinfo("x", [2])])
    other = h.make_graph([h.make_node("Relu", ["x"], ["z"])], "else", [], [tinfo("z", [2])])
    m = model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
              [tinfo("x", [2]), tinfo("c", [], T.BOOL)], [tinfo("y", [2])])
    assert ort_refuses(m)
    with pytest.raises(OnnxImportError, match=r"node If/then_branch/'inner' \(Neg\) writes 'x'"):
        import_onnx(m)


# --- folding is sized before it is evaluated ----------------------------------------------------
def _fill_model(op: str, shape_like: list[int]):
    """A node whose output size is set by a small known input (a 'folding bomb' when big)."""
    s = numpy_helper.from_array(np.array(shape_like, np.int64), "s")
    if op == "ConstantOfShape":
        nodes, inits = [h.make_node(op, ["s"], ["y"], name="fill")], [s]
    elif op == "Expand":
        nodes, inits = [h.make_node(op, ["one", "s"], ["y"], name="fill")], [_f32("one", 1), s]
    elif op == "Tile":
        nodes, inits = [h.make_node(op, ["one", "s"], ["y"], name="fill")], \
            [numpy_helper.from_array(np.ones([1] * len(shape_like), np.float32), "one"), s]
    else:  # Range
        nodes = [h.make_node(op, ["a", "b", "c"], ["y"], name="fill")]
        inits = [numpy_helper.from_array(np.array(v, np.float32), n)
                 for n, v in [("a", 0), ("b", np.prod(shape_like)), ("c", 1)]]
    return model(nodes, [], [tinfo("y", None)], inits)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range"])
def test_folding_bomb_is_not_evaluated_at_import(op):
    m = _fill_model(op, [20000, 20000])  # 400M elements: 1.6 GB if folded
    tracemalloc.start()
    try:
        g = import_onnx(m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"import of a {op} bomb peaked at {peak >> 20} MiB"
    assert sum(p.nbytes for p in g.params.values()) < 1 << 20
    assert g.outputs[0].type.shape in ((20000, 20000), (400000000,))


def test_result_over_the_fold_cap_is_computed_at_run_time():
    m = _fill_model("ConstantOfShape", [2100, 2100])  # 4.4M elements: over the 4M cap
    g = import_onnx(m)
    assert not g.params or max(p.size for p in g.params.values()) < 2100 * 2100
    (y,) = tensorsmith.compile(m)()
    assert np.asarray(y).shape == (2100, 2100) and not np.asarray(y).any()


def test_small_results_are_still_folded():
    m = _fill_model("Expand", [2, 3])
    g = import_onnx(m)
    assert not [n for n in g.nodes if n.op not in ("constant",)], g.to_text()
    (y,) = tensorsmith.compile(m)()
    np.testing.assert_array_equal(np.asarray(y), np.ones((2, 3), np.float32))


# --- no raw Python exception ---------------------------------------------------------------------
def _nested_ifs(depth: int) -> onnx.ModelProto:
    """If inside If ... ``depth`` deep, built in place (a copy would hit protobuf's limit)."""
    m = model([], [tinfo("x", [2]), tinfo("c", [], T.BOOL)], [tinfo("o0", [2])])
    g = m.graph
    for d in range(depth):
        g.node.add(op_type="If", input=["c"], output=[f"o{d}"])
        leaf = g.node[0].attribute.add(name="else_branch", type=onnx.AttributeProto.GRAPH).g
        leaf.name = f"else{d}"
        leaf.node.add(op_type="Identity", input=["x"], output=[f"e{d}"])
        leaf.output.add().CopyFrom(tinfo(f"e{d}", [2]))
        g = g.node[0].attribute.add(name="then_branch", type=onnx.AttributeProto.GRAPH).g
        g.name = f"then{d}"
        g.output.add().CopyFrom(tinfo(f"o{d + 1}", [2]))
    g.node.add(op_type="Identity", input=["x"], output=[f"o{depth}"])
    return m


def test_nested_sub_graphs_import():
    g = import_onnx(_nested_ifs(3))
    (y,) = tensorsmith.compile(g)(np.array([1, 2], np.float32), np.array(True))
    np.testing.assert_array_equal(np.asarray(y), [1, 2])


def test_deeply_nested_sub_graphs_are_refused_not_a_recursion_error():
    with pytest.raises(OnnxLoadError, match="nested more than 64 levels"):
        import_onnx(_nested_ifs(2000))


def test_invalid_utf8_in_a_name_is_a_load_error():
    m = model([h.make_node("Relu", ["x"], ["y"], name="QQQQ")], [tinfo("x", [2])],
              [tinfo("y", [2])])
    data = m.SerializeToString().replace(b"QQQQ", b"\xff\xfeQQ")
    with pytest.raises(OnnxLoadError, match=r"not valid UTF-8.*\\xff\\xfeQQ"):
        tensorsmith.compile(data)


def test_a_converter_crash_names_the_node(monkeypatch):
    def broken(ctx, x):
        return [][0]  # a converter that did not foresee its input

    real = converter_module.lookup
    monkeypatch.setattr(converter_module, "lookup",
                        lambda op, d, v: (1, broken) if op == "Relu" else real(op, d, v))
    m = model([h.make_node("Relu", ["x"], ["y"], name="act7")], [tinfo("x", [2])],
              [tinfo("y", [2])])
    with pytest.raises(OnnxImportError, match=r"act7 \(Relu, opset 17\).*IndexError"):
        import_onnx(m)


def test_newer_ir_version_than_onnx_knows_is_refused():
    m = model([h.make_node("Relu", ["x"], ["y"])], [tinfo("x", [2])], [tinfo("y", [2])])
    m.ir_version = onnx.IR_VERSION + 50
    assert ort_refuses(m)
    with pytest.raises(OnnxLoadError, match="IR version"):
        import_onnx(m)


def test_sparse_initializer_is_its_dense_value():
    values = numpy_helper.from_array(np.array([5.0, -2.0], np.float32), "sp")
    sp = h.make_sparse_tensor(values, numpy_helper.from_array(np.array([[0, 1], [1, 2]], np.int64),
                                                              "sp_idx"), [2, 3])
    m = model([h.make_node("Add", ["x", "sp"], ["y"])], [tinfo("x", [2, 3])], [tinfo("y", [2, 3])])
    m.graph.sparse_initializer.append(sp)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = tensorsmith.compile(m)(x)
    dense = np.zeros((2, 3), np.float32)
    dense[0, 1], dense[1, 2] = 5, -2
    np.testing.assert_array_equal(np.asarray(y), x + dense)
    (want,) = ort.InferenceSession(m.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(np.asarray(y), want)


def test_sparse_initializer_too_big_to_densify_is_refused():
    values = numpy_helper.from_array(np.array([5.0], np.float32), "sp")
    sp = h.make_sparse_tensor(values, numpy_helper.from_array(np.array([3], np.int64), "i"),
                              [1 << 20, 1 << 19])
    m = model([h.make_node("Identity", ["sp"], ["y"])], [], [tinfo("y", None)])
    m.graph.sparse_initializer.append(sp)
    with pytest.raises(OnnxImportError, match=r"sparse constant 'sp'.*more than 4194304"):
        import_onnx(m)
