"""Shape, indexing and resampling ONNX ops against onnx's reference evaluator."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from tensorsmith import ir
from tensorsmith.frontends.onnx import NeedsInputValuesError, import_onnx

sys.path.insert(0, os.path.dirname(__file__))
from oracle import compare_with_oracle  # noqa: E402

RNG = np.random.default_rng(0)
NP_TO_ONNX = {np.dtype(np.float32): T.FLOAT, np.dtype(np.int64): T.INT64,
              np.dtype(np.int32): T.INT32, np.dtype(np.uint8): T.UINT8,
              np.dtype(np.int8): T.INT8, np.dtype(np.bool_): T.BOOL}


def single_op(op, inputs: dict, consts: dict | None = None, opset=18, n_out=1, out_type=T.UNDEFINED,
              **attrs):
    """A model with one ``op`` node: ``inputs`` are graph inputs (name -> example array),
    ``consts`` initializers (name -> array or None for an absent optional input)."""
    consts = consts or {}
    names = list(inputs) + list(consts)
    order = attrs.pop("_order", names)
    node = h.make_node(op, [n if n in inputs or consts.get(n) is not None else "" for n in order],
                       [f"y{i}" for i in range(n_out)], **attrs)
    g = h.make_graph([node], "g",
                     [h.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()],
                     [h.make_tensor_value_info(f"y{i}", out_type, None) if out_type  # no type: inferred
                      else h.make_empty_tensor_value_info(f"y{i}") for i in range(n_out)],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if v is not None])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def check(m, inputs: dict, rtol=1e-5, atol=1e-6, oracle="reference"):
    """Compile ``m`` and compare every output with the reference evaluator (or onnxruntime,
    for what the reference does not implement: negative pads, smaller GatherElements indices)."""
    compiled, got = compare_with_oracle(m, inputs, rtol, atol, oracle)
    return got


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def i64(*v):
    return np.asarray(v, np.int64)


# --- opset-dependent forms -----------------------------------------------------------------------
@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((1, -1), (100, 0), (0, 1), (2, -1)),      # clamped end, negative step
    ((-3,), (-1,), (1,), (1,)),                # negative bounds
    ((5, 0), (-100, 10), (1, 0), (-2, 3)),     # reversed to the start
    ((2,), (2,), (0,), (1,)),                  # empty
])
def test_slice_opset9_attrs_and_opset13_inputs_agree(starts, ends, axes, steps):
    x = rand(6, 7)
    m13 = single_op("Slice", {"x": x}, {"s": i64(*starts), "e": i64(*ends), "a": i64(*axes),
                                          "st": i64(*steps)}, opset=13)
    got13 = check(m13, {"x": x})
    if all(s == 1 for s in steps):  # opset 9 has no steps
        m9 = single_op("Slice", {"x": x}, opset=9, starts=starts, ends=ends, axes=axes)
        assert np.array_equal(check(m9, {"x": x})[0], got13[0])


def test_slice_with_run_time_bounds_asks_for_their_values():
    x = rand(4, 5)
    m = single_op("Slice", {"x": x, "s": i64(1)}, {"e": i64(3)}, opset=13)
    with pytest.raises(NeedsInputValuesError, match="'s'"):
        import_onnx(m)


def test_squeeze_and_unsqueeze_axes_as_attribute_and_input():
    x = rand(1, 3, 1, 2)
    for opset, kind in [(11, "attr"), (13, "input")]:
        sq = (single_op("Squeeze", {"x": x}, opset=opset, axes=[0, -2]) if kind == "attr"
              else single_op("Squeeze", {"x": x}, {"a": i64(0, -2)}, opset=opset))
        assert check(sq, {"x": x})[0].shape == (3, 2)
        un = (single_op("Unsqueeze", {"x": x}, opset=opset, axes=[-1, 1]) if kind == "attr"
              else single_op("Unsqueeze", {"x": x}, {"a": i64(-1, 1)}, opset=opset))
        assert check(un, {"x": x})[0].shape == (1, 1, 3, 1, 2, 1)
    check(single_op("Squeeze", {"x": x}, opset=13), {"x": x})  # no axes: every 1


@pytest.mark.parametrize("shape,allowzero", [((0, -1), 0), ((-1, 2), 0), ((4, 0, 2), 0), ((0, 4), 1)])
def test_reshape_zero_and_minus_one(shape, allowzero):
    x = rand(2, 3, 4) if not allowzero else rand(0, 3, 4)
    check(single_op("Reshape", {"x": x}, {"s": i64(*shape)}, opset=14, allowzero=allowzero), {"x": x})


@pytest.mark.parametrize("opset,attrs,consts,n", [
    (11, {"axis": 1, "split": [1, 4]}, {}, 2),
    (13, {"axis": -1}, {"split": i64(2, 0, 3)}, 3),
    (13, {"axis": 1}, {}, 5),
    (18, {"axis": 1, "num_outputs": 2}, {}, 2),  # uneven: 3 + 2
])
def test_split_forms(opset, attrs, consts, n):
    x = rand(2, 5)
    check(single_op("Split", {"x": x}, consts, opset=opset, n_out=n, **attrs), {"x": x})


# --- padding, tiling, broadcasting ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_with_crop_and_axes(mode):
    x = rand(4, 5)
    consts = {"pads": i64(2, 0, 3, 1), "value": np.array(1.5, np.float32)}
    check(single_op("Pad", {"x": x}, consts, opset=19, mode=mode), {"x": x})
    axes = {"pads": i64(1, 3), "value": None, "axes": i64(-1)}
    check(single_op("Pad", {"x": x}, axes, opset=19, mode=mode), {"x": x})
    crop = {"pads": i64(2, -1, 3, 1), "value": np.array(1.5, np.float32)}  # negative: crop
    check(single_op("Pad", {"x": x}, crop, opset=19, mode=mode, out_type=T.FLOAT), {"x": x}, oracle="ort")


def test_pad_value_can_be_a_run_time_input():
    x, v = rand(2, 3), np.array(-4.0, np.float32)
    check(single_op("Pad", {"x": x, "v": v}, {"pads": i64(0, 1, 2, 0)}, opset=13,
                    _order=["x", "pads", "v"]), {"x": x, "v": v})


def test_tile_expand_depth_space():
    x = rand(2, 8, 4, 6)
    check(single_op("Tile", {"x": x}, {"r": i64(2, 1, 1, 3)}), {"x": x})
    check(single_op("Expand", {"x": x[:, :1]}, {"s": i64(3, 1, 1, 1, 1)}), {"x": x[:, :1]})
    for mode in ("DCR", "CRD"):
        check(single_op("DepthToSpace", {"x": x}, blocksize=2, mode=mode), {"x": x})
    check(single_op("SpaceToDepth", {"x": x}, blocksize=2), {"x": x})


# --- generated tensors -----------------------------------------------------------------------------
def test_trilu_with_run_time_k_and_eye_like():
    x = rand(2, 4, 5)
    for upper in (0, 1):
        for k in (-1, 2):
            kk = np.array(k, np.int64)
            check(single_op("Trilu", {"x": x, "k": kk}, upper=upper), {"x": x, "k": kk})
    check(single_op("EyeLike", {"x": x[0]}, k=1, dtype=T.INT32), {"x": x[0]})


def test_one_hot_negative_indices_and_axis():
    idx = np.array([[0, -1, 3], [5, 2, -4]], np.int64)  # 5 is out of range: all off
    m = single_op("OneHot", {"i": idx}, {"depth": np.array(4, np.int64),
                                         "values": np.array([-1.0, 2.0], np.float32)}, opset=11, axis=1)
    check(m, {"i": idx})


# --- gathers and scatters --------------------------------------------------------------------------
def test_gather_family_with_negative_run_time_indices():
    x = rand(4, 5, 3)
    idx = np.array([[0, -1], [-4, 2]], np.int64)
    check(single_op("Gather", {"x": x, "i": idx}, axis=1), {"x": x, "i": idx})
    small = np.array([[[1, -1], [0, 2]]], np.int64)  # smaller than x off the axis
    check(single_op("GatherElements", {"x": x, "i": small}, axis=2, out_type=T.FLOAT),
          {"x": x, "i": small}, oracle="ort")
    nd = np.array([[1, -2], [0, 0], [3, 4]], np.int64)
    check(single_op("GatherND", {"x": x, "i": nd}), {"x": x, "i": nd})
    nd = np.array([[[1]], [[-2]], [[3]], [[0]]], np.int64)
    check(single_op("GatherND", {"x": x, "i": nd}, batch_dims=1), {"x": x, "i": nd})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_and_nd_reductions(reduction):
    x, upd = rand(3, 4), rand(2, 4)
    idx = np.array([[1, 0, -1, 2], [0, 2, 1, 1]], np.int64)
    check(single_op("ScatterElements", {"x": x, "i": idx, "u": upd}, axis=0, reduction=reduction),
          {"x": x, "i": idx, "u": upd})
    nd_idx = np.array([[2], [0]], np.int64)
    check(single_op("ScatterND", {"x": x, "i": nd_idx, "u": upd}, reduction=reduction),
          {"x": x, "i": nd_idx, "u": upd})


def test_reverse_sequence_and_compress():
    x = rand(4, 3, 2)
    lens = np.array([4, 1, 3], np.int64)
    check(single_op("ReverseSequence", {"x": x, "l": lens}, time_axis=0, batch_axis=1), {"x": x, "l": lens})
    check(single_op("ReverseSequence", {"x": x.transpose(1, 0, 2).copy(), "l": lens}, time_axis=1,
                    batch_axis=0), {"x": x.transpose(1, 0, 2).copy(), "l": lens})
    check(single_op("Compress", {"x": x}, {"c": np.array([1, 0, 1], bool)}, axis=1), {"x": x})


# --- Resize -----------------------------------------------------------------------------------------
RESIZE_CASES = [
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel", antialias=1),
    dict(mode="cubic", coordinate_transformation_mode="half_pixel", exclude_outside=1, cubic_coeff_a=-0.5),
    dict(mode="cubic", coordinate_transformation_mode="half_pixel_symmetric", antialias=1),
]


@pytest.mark.parametrize("attrs", RESIZE_CASES,
                         ids=lambda a: f"{a['mode']}-{a['coordinate_transformation_mode']}")
@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.7, 0.6), (1.0, 1.0, 0.5, 2.25)])
def test_resize_scales(attrs, scales):
    x = rand(1, 2, 5, 8)
    m = single_op("Resize", {"x": x}, {"roi": None, "scales": np.asarray(scales, np.float32)},
                  opset=19, **attrs)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_sizes_axes_keep_aspect_ratio_and_integers():
    x = rand(1, 7, 6, 3)
    m = single_op("Resize", {"x": x}, {"roi": None, "scales": None, "sizes": i64(4, 9)}, opset=19,
                  mode="linear", axes=[2, 1], keep_aspect_ratio_policy="not_larger")
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    img = RNG.integers(0, 256, (1, 1, 6, 6)).astype(np.uint8)
    m = single_op("Resize", {"x": img}, {"roi": None, "scales": np.array([1, 1, 1.5, 0.5], np.float32)},
                  opset=19, mode="cubic")
    check(m, {"x": img})


def test_resize_crop_and_resize_extrapolates():
    x = rand(1, 1, 6, 6)
    roi = np.array([0, 0, -0.2, 0.3, 1, 1, 0.7, 1.4], np.float32)
    m = single_op("Resize", {"x": x}, {"roi": roi, "scales": None, "sizes": i64(1, 1, 4, 5)}, opset=13,
                  mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                  extrapolation_value=7.0)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_linear_is_separable_matmuls_not_a_big_gather():
    x = rand(2, 3, 8, 8)
    m = single_op("Resize", {"x": x}, {"roi": None, "scales": np.array([1, 1, 2, 2], np.float32)},
                  opset=19, mode="linear")
    ops = [n.op for n in import_onnx(m).nodes]
    assert ops.count("dot_general") == 2 and "transpose" not in ops, ops


# --- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample(mode, padding):
    x = rand(2, 3, 5, 6)
    grid = RNG.uniform(-1.3, 1.3, (2, 4, 7, 2)).astype(np.float32)
    for align in (0, 1):
        m = single_op("GridSample", {"x": x, "g": grid}, opset=22, mode=mode, padding_mode=padding,
                      align_corners=align)
        check(m, {"x": x, "g": grid}, rtol=1e-4, atol=1e-5)


def test_affine_grid_and_roi_align():
    theta = rand(2, 2, 3)
    m = single_op("AffineGrid", {"t": theta}, {"size": i64(2, 3, 4, 5)}, opset=20, align_corners=1)
    check(m, {"t": theta})
    x = rand(2, 3, 8, 8)
    rois = np.array([[0, 0, 4, 4], [1.5, 2, 7.5, 5], [3, 3, 3.5, 9]], np.float32)
    for mode in ("avg", "max"):
        m = single_op("RoiAlign", {"x": x}, {"rois": rois, "b": i64(0, 1, 1)}, opset=16, mode=mode,
                      output_height=2, output_width=3, spatial_scale=0.9)
        check(m, {"x": x}, rtol=1e-4, atol=1e-5)


# --- symbolic dims ------------------------------------------------------------------------------------
def test_symbolic_batch_flows_through_reshape_shape_and_flatten():
    nodes = [h.make_node("Shape", ["x"], ["s"], start=0, end=1),
             h.make_node("Reshape", ["x", "target"], ["r"]),
             h.make_node("Flatten", ["r"], ["f"], axis=1)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4, 6])],
                     [h.make_tensor_value_info("s", T.INT64, [1]),
                      h.make_tensor_value_info("f", T.FLOAT, ["batch", 24])],
                     [numpy_helper.from_array(i64(0, -1, 3), "target")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 8
    graph = import_onnx(m)
    assert [str(v.type) for v in graph.outputs] == ["i64[1]", "f32[batch,24]"]
    assert "shape_of" in [n.op for n in graph.nodes]
    x = rand(5, 4, 6)
    check(m, {"x": x})


def test_indexing_ops_reject_float_indices():
    b = ir.GraphBuilder()
    x = b.input(ir.TensorType((3, 4), "f32"), "x")
    i = b.input(ir.TensorType((2,), "f32"), "i")
    with pytest.raises(ir.OpTypeError, match="take: indices must be integers"):
        b.op("take", x, i, axis=0)


def test_dynamic_batch_shape_arithmetic_stays_symbolic():
    """Reshape/Expand/ConstantOfShape/Range/Slice targets computed from Shape(x) at run time,
    as dynamic-batch exports do, are followed symbolically instead of needing input values."""
    c = {k: numpy_helper.from_array(np.asarray(v, np.int64), k)
         for k, v in {"zero": 0, "one": 1, "zero1": [0], "minus1": [-1], "six": [6]}.items()}
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             h.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
             h.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["r"]),
             h.make_node("Range", ["zero", "b", "one"], ["rng"]),
             h.make_node("ConstantOfShape", ["s"], ["ones"],
                         value=numpy_helper.from_array(np.array([2.0], np.float32))),
             h.make_node("Add", ["x", "ones"], ["x1"]),
             h.make_node("Slice", ["x1", "zero1", "b1", "zero1"], ["sl"]),
             h.make_node("Gather", ["s", "one"], ["n"], axis=0),
             h.make_node("Mul", ["b", "n"], ["bn"]),
             h.make_node("Unsqueeze", ["bn", "zero1"], ["bn1"]),
             h.make_node("Concat", ["bn1", "six"], ["t2"], axis=0),
             h.make_node("Reshape", ["sl", "t2"], ["r2"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4, 6])],
                     [h.make_empty_tensor_value_info(o) for o in ("r", "rng", "r2")],
                     list(c.values()))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 8
    graph = import_onnx(m)
    assert [str(v.type) for v in graph.outputs] == ["f32[batch,24]", "i64[batch]", "f32[4*batch,6]"]
    check(m, {"x": rand(3, 4, 6)})


@pytest.mark.parametrize("idx", [np.array(-2, np.int64), np.array([1, 2, 3], np.int64),
                                 np.array([3, 0], np.int64)])
def test_gather_with_constant_indices(idx):
    x = rand(3, 5, 2)
    m = single_op("Gather", {"x": x}, {"i": idx}, axis=1)
    check(m, {"x": x})
    ops = {n.op for n in import_onnx(m).nodes}
    assert ("take" in ops) == (idx.size == 2)  # contiguous constant indices are a slice
