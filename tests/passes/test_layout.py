"""layout: convs in NHWC with weights stored as HWIO params, transposes only at region
boundaries; numerics against onnxruntime / the JAX function, the optimized HLO free of weight
transposes, remarks for what was converted and what was not."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
from cleanup_helpers import remarks, run  # noqa: E402
import models  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith.codegen import executor  # noqa: E402
from tensorsmith.passes import PassContext, PassOptionError, run_pipeline  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _close_to_ort(cm, model, feeds, tol=1e-4):
    want = _ort(model, feeds)
    got = cm(*[feeds[v.name] for v in cm.graph.inputs])
    got = got if isinstance(got, (list, tuple)) else [got]
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))


def _same(before, after, batch: int = 2, tol: float = 1e-4) -> None:
    """Both graphs compute the same on random inputs, symbolic dims set to ``batch``."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal([d if isinstance(d, int) else batch for d in v.type.shape])
          .astype(np.float32) for v in before.inputs]
    for w, g in zip(executor(before)(*xs), executor(after)(*xs)):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _convs(text: str) -> list[str]:
    return re.findall(r"= conv\([^)]*\) \{dimension_numbers=\(([^)]*)\)", text)


def _layout_remark(cm) -> str:
    rec = cm.history.find("layout")
    return "\n".join(str(r) for r in rec.remarks)


# --- the ONNX models of tests/onnx/models.py -------------------------------------------------
def test_resnet_cnn_symbolic_batch_nhwc_matches_onnxruntime():
    m = models.resnet_cnn()
    cm = tensorsmith.compile(m, passes="layout")
    text = cm.ir()
    assert "%image: f32[N,3,32,32]" in text  # the user's signature is kept
    convs = _convs(text)
    assert len(convs) == 6 and set(convs) == {'"NHWC", "HWIO", "NHWC"'}
    # weights are HWIO params, the OIHW ones are gone
    assert re.search(r"param @stem\.conv\.weight/hwio: f32\[3,3,3,16\]", text)
    assert "@stem.conv.weight:" not in text
    np.testing.assert_array_equal(cm.graph.params["stem.conv.weight/hwio"],
                                  np.transpose(numpy_helper.to_array(
                                      next(i for i in m.graph.initializer
                                           if i.name == "stem.conv.weight")), (2, 3, 1, 0)))
    # one activation transpose left: the image going in
    assert text.count("= transpose(") == 1 and "transpose(%image)" in text
    assert "batch_norm" in text and "axis=3" in text
    assert "converted 6 conv(s) to NHWC" in _layout_remark(cm)
    for batch in (1, 3):
        _close_to_ort(cm, m, models.resnet_inputs(batch, seed=batch))


@pytest.mark.parametrize("name", ["bert_encoder_layer", "mlp_dynamic"])
def test_models_without_convs_only_get_kn_dense_weights(name):
    build, make_inputs = models.MODELS[name]
    m = build()
    plain = tensorsmith.compile(m, passes=[])
    assert tensorsmith.compile(m, passes="layout{dense=false}").ir() == plain.ir()
    cm = tensorsmith.compile(m, passes="layout")
    text = cm.ir()
    # every x . W^T (Gemm transB=1) now reads a [K,N] param; MatMul weights already were
    transposed_reads = [n for n in plain.graph.nodes if n.op == "dot_general"
                        and plain.graph.is_param(n.inputs[1])
                        and n.attrs["contracting_dims"][1] == (1,)]
    assert text.count("/kn") // 2 == len(transposed_reads)  # declared once, read once
    assert not [n for n in cm.graph.nodes if n.op == "dot_general" and cm.graph.is_param(
        n.inputs[1]) and n.attrs["contracting_dims"][1] == (1,)]
    if transposed_reads:
        assert f"stored {len(transposed_reads)} dense weight(s) as [K,N]" in _layout_remark(cm)
    feeds = make_inputs(4, seed=2)
    _close_to_ort(cm, m, feeds)


# --- the onnx package's CNNs ------------------------------------------------------------------
def randomized(name: str, seed: int = 0) -> onnx.ModelProto:
    """light_<name>.onnx with fresh fan-in scaled weights (BN variances/scales in [0.5, 1.5]),
    up to its logits."""
    m = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    positive = {n.input[i] for n in m.graph.node if n.op_type == "BatchNormalization" for i in (1, 4)}
    for k, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32:
            continue
        b = (rng.uniform(0.5, 1.5, a.shape) if init.name in positive else
             rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[1:])) if a.ndim >= 2 else
             rng.standard_normal(a.shape) * 0.1)
        m.graph.initializer[k].CopyFrom(numpy_helper.from_array(b.astype(np.float32), init.name))
    last = m.graph.node[-1]
    if last.op_type == "Softmax":  # compare logits: a softmax of random logits is too flat or,
        m.graph.output[0].name = last.input[0]  # where they grow large, decided by rounding
        m.graph.node.remove(last)
    return m


def batched(m: onnx.ModelProto, batch) -> onnx.ModelProto:
    """The model with batch ``batch`` (an int, or a name for a symbolic one): the input's first
    dim set, and Reshape targets that pin the batch to 1 made to copy it (ONNX's 0)."""
    inits = {i.name: i for i in m.graph.initializer}
    init_names = set(inits)
    for vi in m.graph.input:
        if vi.name not in init_names:
            d = vi.type.tensor_type.shape.dim[0]
            if isinstance(batch, str):
                d.dim_param = batch
            else:
                d.dim_value = batch
    for vi in m.graph.output:  # inferred again from the new batch
        vi.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
    return m


def _light_feeds(m: onnx.ModelProto, batch: int) -> dict:
    init = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(1)
    return {vi.name: rng.standard_normal([batch] + [d.dim_value for d in
                                                    vi.type.tensor_type.shape.dim][1:]).astype(np.float32)
            for vi in m.graph.input if vi.name not in init}


LIGHT_FAST = ["squeezenet", "shufflenet"]
LIGHT_SLOW = ["resnet50", "densenet121", "inception_v1", "inception_v2", "bvlc_alexnet",
              "zfnet512", "vgg19"]


def _check_light(name: str, transposes_left: int):
    m = batched(randomized(name), 2)
    feeds = _light_feeds(m, 2)
    cm = tensorsmith.compile(m, *feeds.values(), passes="layout")
    text = cm.ir()
    assert _convs(text) and all(c.startswith('"NHWC", "HWIO"') for c in _convs(text))
    assert len(re.findall(r"= transpose\(", text)) == transposes_left, _layout_remark(cm)
    _close_to_ort(cm, m, feeds)


@pytest.mark.parametrize("name,left", [("squeezenet", 1), ("shufflenet", 17)])
def test_light_models_nhwc_match_onnxruntime(name, left):
    # ShuffleNet: the input transpose and one channel shuffle per unit (a real data movement,
    # now over the last two dims of NHWC) stay
    _check_light(name, left)


def test_light_model_with_a_symbolic_batch():
    m = batched(randomized("squeezenet"), "N")
    cm = tensorsmith.compile(m, passes="layout")
    assert "f32[N,3,224,224]" in cm.ir() and "NCHW" not in cm.ir()
    for batch in (1, 3):
        _close_to_ort(cm, m, _light_feeds(m, batch))


@pytest.mark.slow
@pytest.mark.parametrize("name,left", [("resnet50", 1), ("densenet121", 1), ("inception_v1", 1),
                                       ("inception_v2", 1), ("bvlc_alexnet", 2), ("zfnet512", 2),
                                       ("vgg19", 2)])
def test_light_models_nhwc_match_onnxruntime_slow(name, left):
    # AlexNet, ZFNet, VGG: the input and the flatten into the first dense layer
    _check_light(name, left)


# --- grouped and depthwise convs, pads, dilations ---------------------------------------------
def _conv_model(cin, cout, group, k=3, stride=1, pads=(1, 1, 1, 1), dilation=1, bias=True,
                seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        ins.append("b")
    nodes = [h.make_node("Conv", ins, ["c"], kernel_shape=[k, k], pads=list(pads), group=group,
                         strides=[stride, stride], dilations=[dilation, dilation]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    g = h.make_graph(nodes, "conv", [h.make_tensor_value_info("x", T.FLOAT, ["N", cin, 13, 11])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("cin,cout,group,stride,pads,dilation", [
    (8, 12, 4, 1, (1, 1, 1, 1), 1),      # grouped
    (8, 8, 8, 2, (1, 0, 2, 1), 1),       # depthwise, stride 2, asymmetric pads
    (6, 12, 6, 1, (2, 2, 2, 2), 2),      # depthwise with a channel multiplier, dilated
    (4, 6, 1, 2, (0, 0, 0, 0), 1),       # plain, strided, no padding
], ids=["grouped", "depthwise-s2-pads", "depthwise-multiplier-dilated", "plain-s2"])
def test_grouped_and_depthwise_convs(cin, cout, group, stride, pads, dilation):
    m = _conv_model(cin, cout, group, stride=stride, pads=pads, dilation=dilation)
    cm = tensorsmith.compile(m, passes="layout")
    text = cm.ir()
    assert _convs(text) == ['"NHWC", "HWIO", "NHWC"']
    # the grouped conv's HWIO weight is [H, W, I/groups, O]
    assert re.search(rf"param @w/hwio: f32\[3,3,{cin // group},{cout}\]", text), text
    assert f"feature_group_count={group}" in text
    assert text.count("= transpose(") == 2  # in and out: nothing to cancel against
    x = np.random.default_rng(5).standard_normal((3, cin, 13, 11)).astype(np.float32)
    _close_to_ort(cm, m, {"x": x})


def test_conv_weight_from_an_input_is_left_and_says_why():
    nodes = [h.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    g = h.make_graph(nodes, "conv", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 5, 5]),
                                     h.make_tensor_value_info("w", T.FLOAT, [4, 2, 3, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    cm = tensorsmith.compile(m, passes="layout")
    assert _convs(cm.ir()) == ['"NCHW", "OIHW", "NCHW"']
    assert "missed" in _layout_remark(cm)
    assert "its weight %w is a graph input, not a param" in _layout_remark(cm)


# --- IR text: what sinks where -----------------------------------------------------------------
def test_transposes_sink_through_bias_pool_concat_and_cancel_in_ir_text():
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "b1": rng.standard_normal(4).astype(np.float32),
              "w2": rng.standard_normal((5, 7, 1, 1)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,3,8,8]) {
          param @w1: f32[4,3,3,3]
          param @b1: f32[4]
          param @w2: f32[5,7,1,1]
          %0: f32[N,4,8,8] = conv(%x, @w1) {dimension_numbers=("NCHW", "OIHW", "NCHW"), padding=((1, 1), (1, 1))}
          %1: f32[1,4,1,1] = reshape(@b1) {shape=(1, 4, 1, 1)}
          %2: f32[N,4,8,8] = add(%0, %1)
          %3: f32[N,4,8,8] = relu(%2)
          %4: f32[N,4,4,4] = reduce_window(%3) {kind="max", window_dimensions=(1, 1, 2, 2), window_strides=(1, 1, 2, 2)}
          %5: f32[N,3,4,4] = reduce_window(%x) {kind="max", window_dimensions=(1, 1, 2, 2), window_strides=(1, 1, 2, 2)}
          %6: f32[N,7,4,4] = concatenate(%4, %5) {axis=1}
          %7: f32[N,5,4,4] = conv(%6, @w2) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          %8: f32[N,5] = reduce_sum(%7) {axes=(2, 3)}
          return %8
        }
        """
    before, after, ctx = run(text, "layout", params=params)
    body = [line.split("#")[0].rstrip() for line in str(after).splitlines() if "= " in line]
    assert body == [
        "  %9: f32[N,8,8,3] = transpose(%x) {permutation=(0, 2, 3, 1)}",
        '  %10: f32[N,8,8,4] = conv(%9, @w1/hwio) {dimension_numbers=("NHWC", "HWIO", "NHWC"), '
        "padding=((1, 1), (1, 1))}",
        "  %15: f32[1,1,1,4] = reshape(@b1) {shape=(1, 1, 1, 4)}",
        "  %16: f32[N,8,8,4] = add(%10, %15)",
        "  %18: f32[N,8,8,4] = relu(%16)",
        '  %20: f32[N,4,4,4] = reduce_window(%18) {kind="max", window_dimensions=(1, 2, 2, 1), '
        "window_strides=(1, 2, 2, 1)}",
        '  %5: f32[N,3,4,4] = reduce_window(%x) {kind="max", window_dimensions=(1, 1, 2, 2), '
        "window_strides=(1, 1, 2, 2)}",
        "  %22: f32[N,4,4,3] = transpose(%5) {permutation=(0, 2, 3, 1)}",
        "  %23: f32[N,4,4,7] = concatenate(%20, %22) {axis=3}",
        '  %13: f32[N,4,4,5] = conv(%23, @w2/hwio) {dimension_numbers=("NHWC", "HWIO", "NHWC")}',
        "  %25: f32[N,5] = reduce_sum(%13) {axes=(1, 2)}"]
    assert set(after.params) == {"w1/hwio", "w2/hwio", "b1"}
    np.testing.assert_array_equal(after.params["w2/hwio"], params["w2"].transpose(2, 3, 1, 0))
    _same(before, after)
    assert remarks(ctx, "applied")[-1] == (
        "[layout] applied: converted 2 conv(s) to NHWC with re-laid-out weights; "
        "2 activation transpose(s) left: %9 (conv), %22 (concatenate)")


def test_channel_shuffle_stays_a_shuffle_of_the_last_dims():
    rng = np.random.default_rng(1)
    params = {"w1": rng.standard_normal((6, 6, 1, 1)).astype(np.float32),
              "w2": rng.standard_normal((6, 1, 3, 3)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,6,5,5]) {
          param @w1: f32[6,6,1,1]
          param @w2: f32[6,1,3,3]
          %0: f32[N,6,5,5] = conv(%x, @w1) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          %1: f32[N,2,3,5,5] = reshape(%0) {shape=("N", 2, 3, 5, 5)}
          %2: f32[N,3,2,5,5] = transpose(%1) {permutation=(0, 2, 1, 3, 4)}
          %3: f32[N,6,5,5] = reshape(%2) {shape=("N", 6, 5, 5)}
          %4: f32[N,6,5,5] = conv(%3, @w2) {dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=6, padding=((1, 1), (1, 1))}
          return %4
        }
        """
    before, after, ctx = run(text, "layout", params=params)
    ops = [(n.op, tuple(n.attrs.get("permutation", ()))) for n in after.nodes]
    assert ops == [("transpose", (0, 2, 3, 1)), ("conv", ()), ("reshape", ()),
                   ("transpose", (0, 1, 2, 4, 3)), ("reshape", ()), ("conv", ()),
                   ("transpose", (0, 3, 1, 2))]
    assert after.nodes[2].output.type.shape[1:] == (5, 5, 2, 3)
    _same(before, after)


# --- JAX-traced NHWC CNN ------------------------------------------------------------------------
def _jax_cnn():
    rng = np.random.default_rng(2)
    p = {"k1": rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3,
         "k2": rng.standard_normal((3, 3, 2, 8)).astype(np.float32) * 0.3,
         "w": rng.standard_normal((8, 5)).astype(np.float32) * 0.3}

    def f(p, x):
        y = jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.nn.relu(y)
        y = jax.lax.conv_general_dilated(y, p["k2"], (2, 2), "SAME", feature_group_count=4,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.mean(axis=(1, 2)) @ p["w"]
    return f, p


def test_jax_nhwc_cnn_is_left_alone_and_nchw_stays_correct():
    f, p = _jax_cnn()
    x = np.random.default_rng(3).standard_normal((2, 9, 9, 3)).astype(np.float32)
    plain = tensorsmith.compile(f, x, params=p, passes=[])
    nhwc = tensorsmith.compile(f, x, params=p, passes="layout")
    assert nhwc.ir() == plain.ir() and not nhwc.history.find("layout").remarks
    nchw = tensorsmith.compile(f, x, params=p, passes="layout{format=NCHW}")
    assert set(_convs(nchw.ir())) == {'"NCHW", "OIHW", "NCHW"'}
    assert "param @k2/oihw: f32[8,2,3,3]" in nchw.ir()
    want = np.asarray(f(p, x))
    np.testing.assert_allclose(np.asarray(nchw(x)), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(nhwc(x)), want, rtol=1e-4, atol=1e-4)


# --- the compiled program: no weight transpose left ---------------------------------------------
def _weight_relayouts(hlo: str, shapes: set[tuple[int, ...]]) -> list[str]:
    """HLO transposes/copies whose operand is a tensor of one of the weight shapes."""
    defs = {}
    for m in re.finditer(r"%([\w.\-]+) = \w+\[([\d,]*)\]", hlo):
        defs[m.group(1)] = tuple(int(d) for d in m.group(2).split(",") if d)
    found = []
    for m in re.finditer(r"%([\w.\-]+) = \w+\[[\d,]*\]\{[^}]*\} (transpose|copy)\(%([\w.\-]+)\)",
                         hlo):
        if defs.get(m.group(3)) in shapes:
            found.append(m.group(0))
    return found


def test_optimized_hlo_has_no_weight_transpose():
    m = models.resnet_cnn()
    x = models.resnet_inputs(2, seed=0)["image"]
    plain = tensorsmith.compile(m, x, passes=[])
    cm = tensorsmith.compile(m, x, passes="layout")
    conv_weights = {tuple(a.shape) for a in plain.graph.params.values() if a.ndim == 4}
    conv_weights |= {tuple(a.shape) for a in cm.graph.params.values() if a.ndim == 4}
    # as imported, XLA re-lays-out every OIHW weight inside the program, on every call
    assert len(_weight_relayouts(plain.hlo(), conv_weights)) >= 4
    assert _weight_relayouts(cm.hlo(), conv_weights) == []


# --- auto, options -----------------------------------------------------------------------------
def test_auto_measures_both_layouts_and_keeps_one():
    m = models.resnet_cnn()
    cm = tensorsmith.compile(m, passes="layout{format=auto}")
    notes = [r for r in cm.history.find("layout").remarks if r.kind == "note"]
    assert len(notes) == 1 and "format=auto measured per call on this host" in notes[0].message
    data = dict(notes[0].data)
    assert data["NCHW_ms"] > 0 and data["NHWC_ms"] > 0
    best = data["chosen"]
    assert best == min(("NCHW", "NHWC"), key=lambda k: data[f"{k}_ms"])
    expected = {"NHWC": '"NHWC", "HWIO", "NHWC"', "NCHW": '"NCHW", "OIHW", "NCHW"'}[best]
    assert set(_convs(cm.ir())) == {expected}
    _close_to_ort(cm, m, models.resnet_inputs(2, seed=4))


def test_auto_without_an_executor_keeps_nhwc_and_says_so():
    m = models.resnet_cnn()
    source = tensorsmith.compile(m, passes=[]).graph
    ctx = PassContext()
    out, _ = run_pipeline(source, "layout{format=auto}", ctx)
    assert set(_convs(out.to_text())) == {'"NHWC", "HWIO", "NHWC"'}
    assert remarks(ctx, "note") == ["[layout] note: format=auto needs an executor to measure; "
                                    "kept NHWC"]


def test_bad_format_names_the_option_and_the_choices():
    with pytest.raises(PassOptionError, match=r"pass 'layout' option 'format': 'NWHC' is not one "
                                              r"of NHWC, NCHW, auto.*NHWC"):
        tensorsmith.compile(models.resnet_cnn(), passes="layout{format=NWHC}")


def test_user_weights_are_not_changed():
    m = models.resnet_cnn()
    before = {i.name: numpy_helper.to_array(i).copy() for i in m.graph.initializer}
    source = tensorsmith.compile(m, passes=[]).graph
    arrays = {k: v.copy() for k, v in source.params.items()}
    out, _ = run_pipeline(source, "layout", PassContext(executor=executor))
    for k, v in arrays.items():
        np.testing.assert_array_equal(source.params[k], v)
    for i in m.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(i), before[i.name])


@pytest.mark.parametrize("passes", ["fold-batchnorm,layout", "layout,fold-batchnorm",
                                    "layout,fuse,default"])
def test_with_fold_batchnorm_and_fuse(passes):
    m = models.resnet_cnn()
    cm = tensorsmith.compile(m, passes=passes)
    text = cm.ir()
    assert set(_convs(text)) == {'"NHWC", "HWIO", "NHWC"'} and text.count("= transpose(") == 1
    if "fold" in passes:
        # the folded bias broadcasts straight onto the NHWC channel axis
        assert "batch_norm" not in text and text.count("broadcast_dimensions=(3,)") == 6
        assert text.count("= reshape(") == 1  # the flatten only
    else:
        assert text.count("= batch_norm(") == 6 and text.count("axis=3") == 6
    _close_to_ort(cm, m, models.resnet_inputs(2, seed=7))


def test_weight_annotations_follow_the_relaid_weight():
    from tensorsmith.ir.annotations import Annotation
    source = tensorsmith.compile(models.resnet_cnn(), passes=[]).graph
    w = source.params["layer1.0.conv.weight"]
    mask = np.abs(w) > 0.5
    scales = np.arange(w.shape[0], dtype=np.float32) + 1
    source = source.with_annotations([
        Annotation("layer1.0.conv.weight", "mask", {"sparsity": 0.5}, mask),
        Annotation("layer1.0.conv.weight", "quant", {"dtype": "i8", "axis": 0}, scales)])
    out, _ = run_pipeline(source, "layout", PassContext(executor=executor))
    new = "layer1.0.conv.weight/hwio"
    assert out.annotation("layer1.0.conv.weight", "mask") is None
    np.testing.assert_array_equal(out.annotation(new, "mask").array, mask.transpose(2, 3, 1, 0))
    quant = out.annotation(new, "quant")
    assert quant.attrs["axis"] == 3  # O moved from axis 0 (OIHW) to axis 3 (HWIO)
    np.testing.assert_array_equal(quant.array, scales)
    # the masked entries of the new weight are the masked entries of the old one
    np.testing.assert_array_equal(out.params[new][~out.annotation(new, "mask").array],
                                  w.transpose(2, 3, 1, 0)[~mask.transpose(2, 3, 1, 0)])


def test_pad_slice_softmax_reduce_sink_and_a_graph_input_operand_stops_it():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "s": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,3,8,8], %g: f32[N,4,6,6]) {
          param @w: f32[4,3,3,3]
          param @s: f32[1,4,6,6]
          %0: f32[N,4,6,6] = conv(%x, @w) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          %1: f32[N,4,6,6] = mul(%0, @s)
          %2: f32[] = constant() {dtype="f32", value=0.0}
          %3: f32[N,4,8,7] = pad(%1, %2) {high=(0, 0, 1, 0), low=(0, 0, 1, 1)}
          %4: f32[N,4,4,7] = slice(%3) {limit=("N", 4, 8, 7), start=(0, 0, 0, 0), strides=(1, 1, 2, 1)}
          %5: f32[N,4,4,7] = softmax(%4) {axis=1}
          %6: f32[N,1,4,7] = reduce_max(%5) {axes=(1,), keepdims=true}
          %7: f32[N,4,6,6] = add(%0, %g)
          return %6, %7
        }
        """
    before, after, ctx = run(text, "layout", params=params)
    ops = {n.op: n for n in after.nodes}
    assert [n.op for n in after.nodes] == ["transpose", "conv", "transpose", "mul", "constant", "pad",
                                           "slice", "softmax", "reduce_max", "reshape", "add"]
    assert ops["pad"].attrs["low"] == (0, 1, 1, 0) and ops["pad"].attrs["high"] == (0, 1, 0, 0)
    assert ops["slice"].attrs["strides"] == (1, 2, 1, 1)
    assert ops["softmax"].attrs["axis"] == 3 and ops["reduce_max"].attrs["axes"] == (3,)
    # the full-size constant is re-laid-out at pass time; the add with an input stays NCHW
    np.testing.assert_array_equal(after.params["s/relaid"], params["s"].transpose(0, 2, 3, 1))
    assert ops["add"].inputs[0].name == after.nodes[2].output.name
    _same(before, after)


def test_dense_weight_in_ir_text_and_a_shared_one_is_left():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((5, 3)).astype(np.float32),
              "t": rng.standard_normal((3, 3)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,3]) {
          param @w: f32[5,3]
          param @t: f32[3,3]
          %0: f32[N,5] = dot_general(%x, @w) {contracting_dims=((1,), (1,))}
          %1: f32[N,3] = dot_general(%x, @t) {contracting_dims=((1,), (1,))}
          %2: f32[N,3] = dot_general(%1, @t) {contracting_dims=((1,), (0,))}
          return %0, %2
        }
        """
    before, after, ctx = run(text, "layout", params=params)
    body = [line.split("#")[0].rstrip() for line in str(after).splitlines() if "= " in line]
    assert body[0] == "  %3: f32[N,5] = dot_general(%x, @w/kn) {contracting_dims=((1,), (0,))}"
    np.testing.assert_array_equal(after.params["w/kn"], params["w"].T)
    assert "w" not in after.params and "t" in after.params
    assert remarks(ctx) == [
        "[layout] missed: %1: left dense weight @t as [N,K]: it has other users, a transposed "
        "copy would double it",
        "[layout] applied: stored 1 dense weight(s) as [K,N]"]
    _same(before, after)


def test_auto_with_a_symbolic_image_size_keeps_nhwc_and_says_why():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    text = """
        graph @main(%x: f32[N,3,H,H]) {
          param @w: f32[4,3,3,3]
          %0: f32[N,4,H-2,H-2] = conv(%x, @w) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          return %0
        }
        """
    before, after, ctx = run(text, "layout{format=auto}", params=params)
    assert set(_convs(str(after))) == {'"NHWC", "HWIO", "NHWC"'}
    assert remarks(ctx, "note") == [
        "[layout] note: format=auto needs calibration inputs to measure a model with symbolic "
        "sizes other than the batch (H); kept NHWC"]


def test_conv_inside_a_fused_composite_is_reported():
    m = _conv_model(4, 6, 1)  # conv + bias + relu: fuse makes fused.conv_bias_relu
    cm = tensorsmith.compile(m, passes="fuse,layout")
    assert "fused.conv_bias_relu" in cm.ir() and '"NCHW", "OIHW", "NCHW"' in cm.ir()
    assert ("left 1 conv(s) inside composite 'fused.conv_bias_relu' in NCHW: region bodies are "
            "not re-laid-out (run layout before fuse)") in _layout_remark(cm)
    first = tensorsmith.compile(m, passes="layout,fuse")
    assert "fused.conv_bias_relu" in first.ir() and "NCHW" not in first.ir()
    x = np.random.default_rng(0).standard_normal((2, 4, 13, 11)).astype(np.float32)
    _close_to_ort(first, m, {"x": x})
