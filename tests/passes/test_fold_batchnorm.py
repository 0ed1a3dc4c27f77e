"""fold-batchnorm: folded = unfused on fresh inputs (JAX and ONNX forms), the BN nodes gone,
and a `missed` remark with the reason where a fold almost matched."""
from __future__ import annotations

import copy
import os
import sys

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
from cleanup_helpers import assert_same_numerics, remarks, run  # noqa: E402
from models import resnet_cnn, resnet_inputs  # noqa: E402

import tensorsmith  # noqa: E402

FOLD = "fold-batchnorm,dce"
EPS = 1e-5


def _compile_both(model, *args, params=None, passes=FOLD):
    """(unfused, folded) compiled models of the same source."""
    kw = {} if params is None else {"params": params}
    return (tensorsmith.compile(model, *args, passes=[], **kw),
            tensorsmith.compile(model, *args, passes=passes, **kw))


def _remarks(cm, kind: str) -> list[str]:
    return [str(m) for rec in cm.history for m in rec.remarks if m.kind == kind]


def _close(a, b, rtol=1e-5, atol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _bn_params(rng, c):
    return {"scale": rng.uniform(0.5, 2.0, c).astype(np.float32),
            "bias": rng.standard_normal(c).astype(np.float32),
            "mean": rng.standard_normal(c).astype(np.float32),
            "var": rng.uniform(0.1, 3.0, c).astype(np.float32)}


def _bn(x, p):
    """The decomposed form Flax traces (as in the bundled digits CNN)."""
    return (x - p["mean"]) * (p["scale"] * jax.lax.rsqrt(p["var"] + EPS)) + p["bias"]


def _bn_gone(text: str) -> None:
    for op in ("batch_norm(", "rsqrt(", "sub(", "mul("):
        assert op not in text, f"{op} left in\n{text}"


# --- the bundled digits CNN --------------------------------------------------------------------
@pytest.mark.parametrize("passes", [FOLD, "default," + FOLD, "fold-batchnorm,default"])
def test_digits_cnn_folds_every_batch_norm_and_keeps_accuracy(passes):
    ex = tensorsmith.examples.load("digits-cnn")
    before = copy.deepcopy(jax.tree_util.tree_map(np.asarray, ex.params))
    plain, folded = _compile_both(ex.fn, *ex.example_inputs, params=ex.params, passes=passes)
    text = folded.ir()
    _bn_gone(text)
    assert text.count("= conv(") == 2 and text.count("/folded)") == 2
    applied = _remarks(folded, "applied")
    assert any("folded mul" in r and "into conv" in r for r in applied), applied
    assert not _remarks(folded, "missed")
    x = np.random.default_rng(1).random(ex.example_inputs[0].shape, dtype=np.float32)
    _close(plain(x), folded(x))
    x_test, y_test = ex.eval_data
    want = np.asarray(ex.fn(ex.params, x_test)).argmax(-1)
    f2 = tensorsmith.compile(ex.fn, x_test, params=ex.params, passes=passes)
    got = np.asarray(f2(x_test)).argmax(-1)
    assert np.mean(got == y_test) == np.mean(want == y_test)
    # the user's weights are not touched
    jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                           jax.tree_util.tree_map(np.asarray, ex.params))


# --- ONNX: BatchNormalization imported as its own op -----------------------------------------
def test_onnx_resnet_batch_norm_ops_fold_and_match_onnxruntime():
    m = resnet_cnn()
    plain, folded = _compile_both(m)
    text = folded.ir()
    assert "batch_norm(" not in text
    assert len(_remarks(folded, "applied")) == 6  # stem + 4 block convs + the projection skip
    inputs = resnet_inputs(3, seed=5)
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    got = np.asarray(folded(inputs["image"])[0])
    _close(plain(inputs["image"]), got)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _onnx_conv_bn(group: int, cin: int = 4, cout: int = 8, bias: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32), "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        conv_in.append("b")
    for k, v in _bn_params(rng, cout).items():
        inits.append(numpy_helper.from_array(v, k))
    nodes = [h.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1], group=group),
             h.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"],
                         epsilon=EPS)]
    g = h.make_graph(nodes, "conv_bn", [h.make_tensor_value_info("x", T.FLOAT, ["N", cin, 6, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", cout, 6, 6])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("group,bias", [(2, True), (4, False)], ids=["grouped", "depthwise-no-bias"])
def test_onnx_grouped_conv_batch_norm(group, bias):
    m = _onnx_conv_bn(group, bias=bias)
    plain, folded = _compile_both(m)
    assert "batch_norm(" not in folded.ir() and f"feature_group_count={group}" in folded.ir()
    x = np.random.default_rng(9).standard_normal((2, 4, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    _close(plain(x), folded(x))
    np.testing.assert_allclose(np.asarray(folded(x)[0]), want, rtol=1e-4, atol=1e-4)


# --- JAX: the decomposed form ------------------------------------------------------------------
def test_dense_then_batch_norm():
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal((12, 6)).astype(np.float32),
         "b": rng.standard_normal(6).astype(np.float32), "bn": _bn_params(rng, 6)}

    def f(p, x):
        return jax.nn.relu(_bn(x @ p["w"] + p["b"], p["bn"]))

    x = rng.standard_normal((5, 12)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    text = folded.ir()
    _bn_gone(text)
    assert text.count("= dot_general(") == 1 and text.count("= add(") == 1
    x2 = np.random.default_rng(4).standard_normal((5, 12)).astype(np.float32)
    _close(plain(x2), folded(x2))
    _close(f(p, x2), folded(x2))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_nhwc_then_batch_norm(multiplier):
    rng = np.random.default_rng(2)
    c = 4
    p = {"k": rng.standard_normal((3, 3, 1, c * multiplier)).astype(np.float32),
         "bn": _bn_params(rng, c * multiplier)}

    def f(p, x):  # no conv bias: BN follows the bare conv
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME", feature_group_count=c,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return _bn(y, p["bn"])

    x = rng.standard_normal((2, 7, 7, c)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    _bn_gone(folded.ir())
    x2 = np.random.default_rng(8).standard_normal((2, 7, 7, c)).astype(np.float32)
    _close(plain(x2), folded(x2))


def test_nchw_conv_scale_shift_and_scalar_after_dense():
    rng = np.random.default_rng(6)
    p = {"k": rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
         "s": rng.standard_normal((1, 5, 1, 1)).astype(np.float32),
         "t": rng.standard_normal((5, 1, 1)).astype(np.float32),
         "w": rng.standard_normal((5 * 16, 7)).astype(np.float32)}

    def f(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        y = y * p["s"] + p["t"]
        return (y.reshape(y.shape[0], -1) @ p["w"]) / 4.0

    x = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    text = folded.ir()
    assert "mul(" not in text and "div(" not in text, text
    x2 = np.random.default_rng(7).standard_normal((3, 3, 4, 4)).astype(np.float32)
    _close(plain(x2), folded(x2))


def test_weight_on_the_left_and_a_zero_gamma():
    rng = np.random.default_rng(11)
    bn = _bn_params(rng, 6)
    bn["scale"][2] = 0.0  # a pruned BN channel still folds (to a zero row of the weight)
    p = {"w": rng.standard_normal((6, 12)).astype(np.float32), "bn": bn}

    def f(p, x):  # x: (features, tokens); the output channel is axis 0, the weight's axis 0
        y = p["w"] @ x
        return (y - p["bn"]["mean"][:, None]) * (p["bn"]["scale"] * jax.lax.rsqrt(
            p["bn"]["var"] + EPS))[:, None] + p["bn"]["bias"][:, None]

    x = rng.standard_normal((12, 5)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    _bn_gone(folded.ir())
    x2 = np.random.default_rng(12).standard_normal((12, 5)).astype(np.float32)
    _close(plain(x2), folded(x2))
    _close(f(p, x2), folded(x2))


# --- what must not fold, with the reason -------------------------------------------------------
def test_conv_with_a_second_user_is_not_folded():
    rng = np.random.default_rng(5)
    p = {"k": rng.standard_normal((3, 3, 2, 4)).astype(np.float32), "bn": _bn_params(rng, 4)}

    def f(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return _bn(y, p["bn"]), y.sum()

    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    assert "rsqrt(" in folded.ir() and "/folded" not in folded.ir()
    missed = _remarks(folded, "missed")
    assert any("has other users" in r and "into conv" in r for r in missed), missed
    x2 = np.random.default_rng(3).standard_normal((2, 5, 5, 2)).astype(np.float32)
    _close(plain(x2), folded(x2))


def test_scale_along_a_spatial_axis_is_not_folded():
    rng = np.random.default_rng(5)
    p = {"k": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
         "s": rng.standard_normal((1, 5, 1, 1)).astype(np.float32)}

    def f(p, x):
        y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y * p["s"]

    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    plain, folded = _compile_both(f, x, params=p)
    assert "mul(" in folded.ir()
    missed = _remarks(folded, "missed")
    assert any("varies along axis 1" in r and "not along the output channel (axis 3)" in r
               for r in missed), missed
    _close(plain(x), folded(x))


def test_batch_norm_with_statistics_from_an_input_is_not_folded():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              **{k: v for k, v in _bn_params(rng, 4).items() if k != "scale"}}
    before, after, ctx = run("""
        graph @main(%x: f32[2,3,6,6], %s: f32[4]) {
          param @w: f32[4,3,3,3]
          param @bias: f32[4]
          param @mean: f32[4]
          param @var: f32[4]
          %0: f32[2,4,4,4] = conv(%x, @w) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          %1: f32[2,4,4,4] = batch_norm(%0, %s, @bias, @mean, @var) {axis=1, epsilon=1e-05}
          return %1
        }
        """, FOLD, params=params)
    assert "batch_norm(" in str(after)
    assert remarks(ctx, "missed") == ["[fold-batchnorm] missed: %1: did not fold batch_norm %1: "
                                      "its statistic %s is not a param or constant"]


def test_batch_norm_op_folds_into_a_conv_in_ir_text():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), **_bn_params(rng, 4)}
    text = """
        graph @main(%x: f32[2,3,6,6]) {
          param @w: f32[4,3,3,3]
          param @scale: f32[4]
          param @bias: f32[4]
          param @mean: f32[4]
          param @var: f32[4]
          %0: f32[2,4,4,4] = conv(%x, @w) {dimension_numbers=("NCHW", "OIHW", "NCHW")}
          %1: f32[2,4,4,4] = batch_norm(%0, @scale, @bias, @mean, @var) {axis=1, epsilon=1e-05}
          return %1
        }
        """
    before, after, ctx = run(text, FOLD, params=params)
    body = [line.split("#")[0].rstrip() for line in str(after).splitlines() if "= " in line]
    assert body == [
        '  %2: f32[2,4,4,4] = conv(%x, @w/folded) {dimension_numbers=("NCHW", "OIHW", "NCHW")}',
        "  %3: f32[1,4,1,1] = broadcast_in_dim(@w/folded_bias) {broadcast_dimensions=(1,), "
        "shape=(1, 4, 1, 1)}",
        "  %4: f32[2,4,4,4] = add(%2, %3)"]
    assert set(after.params) == {"w/folded", "w/folded_bias"}
    assert_same_numerics(before, after, tol=1e-5)
    np.testing.assert_array_equal(before.params["w"], params["w"])  # input arrays untouched


def test_shared_weight_and_a_scale_from_an_input_are_not_folded():
    rng = np.random.default_rng(13)
    p = {"k": rng.standard_normal((3, 3, 2, 4)).astype(np.float32), "bn": _bn_params(rng, 4),
         "w": rng.standard_normal((2, 3)).astype(np.float32)}

    def f(p, x, s):
        conv = lambda v: jax.lax.conv_general_dilated(  # noqa: E731
            v, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        tied = _bn(conv(x), p["bn"]) + conv(x * 2.0)  # one kernel, two convs
        return tied, (x[:, 0, 0, :] @ p["w"]) * s

    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    s = rng.standard_normal(3).astype(np.float32)
    plain, folded = _compile_both(f, x, s, params=p)
    missed = _remarks(folded, "missed")
    assert any("its weight @" in r and "is shared with other nodes" in r for r in missed), missed
    assert any("did not fold mul" in r and "is not a param or constant" in r for r in missed), missed
    assert "/folded)" not in folded.ir()
    _close(plain(x, s), folded(x, s))


def test_batch_norm_not_after_a_conv_stays_and_says_why():
    rng = np.random.default_rng(0)
    params = _bn_params(rng, 4)
    before, after, ctx = run("""
        graph @main(%x: f32[2,4,6,6]) {
          param @scale: f32[4]
          param @bias: f32[4]
          param @mean: f32[4]
          param @var: f32[4]
          %0: f32[2,4,6,6] = relu(%x)
          %1: f32[2,4,6,6] = batch_norm(%0, @scale, @bias, @mean, @var) {axis=1, epsilon=1e-05}
          return %1
        }
        """, FOLD, params=params)
    assert "batch_norm(" in str(after)
    assert remarks(ctx, "missed") == ["[fold-batchnorm] missed: %1: did not fold batch_norm %1: its "
                                      "input %0 is a relu result, not a conv or dense with a param "
                                      "weight"]
