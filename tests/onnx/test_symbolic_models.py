"""Models with symbolic [N,3,H,W] / [B,T] inputs: compiled once, called at several shapes,
compared with onnxruntime; their IR types carry the dims in normal form."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

import tensorsmith
from tensorsmith.frontends.onnx import import_onnx

RNG = np.random.default_rng(0)


def _init(name, *shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _model(nodes, inputs, outputs, inits, opset=18):
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs],
                     inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _check_at_shapes(m, feeds_list, rtol=2e-4, atol=2e-4):
    """Compile the model once and call it with every feed; compare with onnxruntime."""
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = tensorsmith.compile(m, target="cpu")
    for feeds in feeds_list:
        want = sess.run(None, feeds)
        got = [np.asarray(o) for o in cm(*feeds.values())]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (g.shape, w.shape, {k: v.shape for k, v in feeds.items()})
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return cm


def cnn():
    """Conv (stride 2, pads), BN-free ReLU, MaxPool, AvgPool, a residual add, Resize by
    scales, GlobalAveragePool and a dense head, on an [N,3,H,W] input."""
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("Add", ["r2", "p1"], ["res"]),
        h.make_node("AveragePool", ["res"], ["a1"], kernel_shape=[2, 2], strides=[1, 1],
                    pads=[0, 0, 1, 1]),
        h.make_node("Resize", ["a1", "", "scales"], ["up"], mode="nearest"),
        h.make_node("Conv", ["up", "w3"], ["c3"], strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2]),
        h.make_node("GlobalAveragePool", ["c3"], ["gap"]),
        h.make_node("Flatten", ["gap"], ["flat"]),
        h.make_node("Gemm", ["flat", "wd", "bd"], ["y"], transB=1),
    ]
    inits = [_init("w1", 8, 3, 3, 3), _init("b1", 8), _init("w2", 8, 8, 3, 3, scale=0.1),
             _init("w3", 4, 8, 3, 3, scale=0.1), _init("wd", 5, 4), _init("bd", 5),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])], ["y", "c3"], inits)


def test_cnn_types_are_symbolic_normal_forms():
    g = import_onnx(cnn())
    types = {v.name: str(v.type) for n in g.nodes for v in n.outputs}
    assert str(g.inputs[0].type) == "f32[N,3,H,W]"
    out = {str(v.type) for v in g.outputs}
    # conv s2 p1 k3: (H+2-3)//2+1 = (H+1)//2; maxpool s2 p1 k3 on that: ((H+1)//2+1)//2+... normalized
    assert "f32[N,5]" in out
    assert any(t.startswith("f32[N,8,(H+1)//2,(W+1)//2]") for t in types.values()), types


def test_cnn_compiled_once_runs_at_many_shapes():
    feeds = [{"x": RNG.standard_normal((n, 3, hh, ww)).astype(np.float32)}
             for n, hh, ww in [(1, 32, 32), (2, 17, 23), (3, 40, 9), (1, 8, 8)]]
    _check_at_shapes(cnn(), feeds)


def audio():
    """Reflect Pad over a dynamic length, STFT, a magnitude, a Conv1d stack and a GRU."""
    frame, step, hidden = 16, 4, 6
    bins = frame // 2 + 1
    nodes = [
        h.make_node("Pad", ["wav", "pads"], ["padded"], mode="reflect"),
        h.make_node("Unsqueeze", ["padded", "ax2"], ["sig"]),
        h.make_node("STFT", ["sig", "step", "window", ""], ["spec"], onesided=1),
        h.make_node("Mul", ["spec", "spec"], ["sq"]),
        h.make_node("ReduceSum", ["sq", "ax3"], ["power"], keepdims=0),  # [B, F, bins]
        h.make_node("Transpose", ["power"], ["pt"], perm=[0, 2, 1]),  # [B, bins, F]
        h.make_node("Conv", ["pt", "cw1"], ["c1"], pads=[1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "cw2"], ["c2"], strides=[2], pads=[1, 1]),
        h.make_node("Transpose", ["c2"], ["seq"], perm=[2, 0, 1]),  # [F', B, C]
        h.make_node("GRU", ["seq", "gw", "gr", "gb"], ["ys", "yh"], hidden_size=hidden),
        h.make_node("Squeeze", ["yh", "ax0"], ["y"]),
    ]
    inits = [_ints("pads", [0, frame // 2, 0, frame // 2]), _ints("ax2", [2]), _ints("ax3", [3]),
             _ints("ax0", [0]), numpy_helper.from_array(np.array(step, np.int64), "step"),
             numpy_helper.from_array(np.hanning(frame).astype(np.float32), "window"),
             _init("cw1", 8, bins, 3, scale=0.1), _init("cw2", 5, 8, 3, scale=0.2),
             _init("gw", 1, 3 * hidden, 5), _init("gr", 1, 3 * hidden, hidden), _init("gb", 1, 6 * hidden)]
    return _model(nodes, [h.make_tensor_value_info("wav", T.FLOAT, ["B", "T"])], ["y", "c2"], inits)


def test_audio_front_end_at_many_lengths():
    feeds = [{"wav": RNG.standard_normal((b, t)).astype(np.float32)} for b, t in [(1, 64), (2, 97), (3, 50)]]
    cm = _check_at_shapes(audio(), feeds, rtol=1e-3, atol=1e-3)
    assert "T" in str(cm.graph.inputs[0].type)


def shape_chain():
    """x[B,S,D] reshaped to [B,S,heads,D/heads] through Shape -> Gather -> Concat -> Reshape,
    then a mask from Shape: positions >= S//2 zeroed."""
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        h.make_node("Gather", ["s", "i1"], ["sq"], axis=0),
        h.make_node("Concat", ["b", "sq", "heads", "minus1"], ["target"], axis=0),
        h.make_node("Reshape", ["x", "target"], ["r"]),
        h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
        h.make_node("Div", ["sq", "two"], ["half"]),
        h.make_node("Squeeze", ["sq"], ["sq0"]),
        h.make_node("Squeeze", ["half"], ["half0"]),
        h.make_node("Range", ["zero", "sq0", "one"], ["pos"]),
        h.make_node("GreaterOrEqual", ["pos", "half0"], ["late"]),
        h.make_node("Cast", ["late"], ["latef"], to=T.FLOAT),
        h.make_node("Unsqueeze", ["latef", "ax1"], ["m"]),  # [S, 1]
        h.make_node("Mul", ["t", "m"], ["y"]),
    ]
    inits = [_ints("i0", [0]), _ints("i1", [1]), _ints("heads", [2]), _ints("minus1", [-1]),
             _ints("two", [2]), _ints("ax1", [1]),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one")]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", "S", 8])], ["y"], inits)


def test_shape_gather_concat_reshape_chain():
    g = import_onnx(shape_chain())
    assert str(g.outputs[0].type) == "f32[B,2,S,4]"
    feeds = [{"x": RNG.standard_normal((b, s, 8)).astype(np.float32)} for b, s in [(1, 4), (2, 7), (3, 12)]]
    _check_at_shapes(shape_chain(), feeds)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_over_a_symbolic_length(mode):
    nodes = [h.make_node("Pad", ["x", "pads"], ["y"], mode=mode)]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", "L"])], ["y"],
               [_ints("pads", [0, 3, 0, 2])])
    assert str(import_onnx(m).outputs[0].type) == "f32[B,L+5]"
    _check_at_shapes(m, [{"x": RNG.standard_normal((b, n)).astype(np.float32)}
                         for b, n in [(1, 6), (2, 9), (3, 4)]])


@pytest.mark.parametrize("starts, ends, steps", [
    ([1], [-1], [1]), ([2], [100], [2]), ([-3], [2**62], [1]), ([0], [5], [1]),
    ([-1], [-2**62], [-1]),
])
def test_slice_of_a_symbolic_dim_is_clamped(starts, ends, steps):
    nodes = [h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, "L"])], ["y"],
               [_ints("st", starts), _ints("en", ends), _ints("ax", [1]), _ints("sp", steps)])
    _check_at_shapes(m, [{"x": RNG.standard_normal((2, n)).astype(np.float32)} for n in (1, 3, 8, 11)])


def test_norms_over_symbolic_axes_divide_by_a_run_time_count():
    nodes = [h.make_node("InstanceNormalization", ["x", "s", "b"], ["i"]),
             h.make_node("GroupNormalization", ["i", "s", "b"], ["gn"], num_groups=2),
             h.make_node("LayerNormalization", ["gn", "ls"], ["y"], axis=-2)]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, "L"])], ["y"],
               [_init("s", 4), _init("b", 4), _init("ls", 4, 1)], opset=21)
    _check_at_shapes(m, [{"x": RNG.standard_normal((n, 4, l)).astype(np.float32)}
                         for n, l in [(1, 5), (2, 9), (3, 2)]], rtol=1e-3, atol=1e-3)


def test_reshape_minus_one_needs_a_provable_division():
    nodes = [h.make_node("Reshape", ["x", "shape"], ["y"])]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", "L"])], ["y"],
               [_ints("shape", [-1, 2])])
    with pytest.raises(tensorsmith.TensorsmithError, match=r"cannot infer -1 .*not provably a multiple of 2"):
        import_onnx(m)


@pytest.mark.parametrize("build, shapes", [
    (cnn, [(2, 3, 17, 23), (1, 3, 32, 32)]),
    (audio, [(2, 97), (1, 64)]),
])
def test_exports_keep_the_dims_symbolic(build, shapes, tmp_path):
    """jax.export with H, W (or T) symbolic: one file runs at every shape (dims jax writes
    differently, and a scan of symbolic length, are lowered to match the IR)."""
    m = build()
    loaded = tensorsmith.load(tensorsmith.compile(m, target="cpu").export(tmp_path / "m.tsm"))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in shapes:
        x = RNG.standard_normal(shape).astype(np.float32)
        got, want = loaded(x), sess.run(None, {m.graph.input[0].name: x})
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode, ctm", [("nearest", "asymmetric"), ("nearest", "half_pixel"),
                                       ("linear", "half_pixel"), ("linear", "align_corners")])
def test_resize_to_sizes_read_from_another_shape(mode, ctm):
    """FPN-style upsampling: Resize(y, sizes=Shape(y)[:2] ++ Shape(x)[2:]) back to x's H, W."""
    nodes = [
        h.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
        h.make_node("Shape", ["y"], ["sy"], end=2),
        h.make_node("Shape", ["x"], ["sx"], start=2),
        h.make_node("Concat", ["sy", "sx"], ["sizes"], axis=0),
        h.make_node("Resize", ["y", "", "", "sizes"], ["up"], mode=mode,
                    coordinate_transformation_mode=ctm),
        h.make_node("Add", ["x", "up"], ["z"]),
    ]
    m = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, "H", "W"])], ["z"],
               [_init("w", 4, 4, 3, 3)])
    assert str(import_onnx(m).outputs[0].type) == "f32[N,4,H,W]"
    _check_at_shapes(m, [{"x": RNG.standard_normal((n, 4, hh, ww)).astype(np.float32)}
                         for n, hh, ww in [(1, 8, 8), (2, 11, 6), (1, 5, 13)]])
