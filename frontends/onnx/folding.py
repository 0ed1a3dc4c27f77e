"""Import-time folding: ONNX nodes whose inputs are all known are evaluated, not converted.

This is what makes Constant/Shape-driven sub-graphs (shape arithmetic feeding Reshape,
Slice, Expand...) disappear: the rest of the pipeline sees static shapes. Evaluation uses
onnx's own reference implementation, so folding follows the ONNX spec by construction.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import onnx
from onnx import NodeProto, helper

from ...ir import TensorType
from .context import attribute_value
from .errors import OnnxImportError, Unsupported

# Ops never folded: non-deterministic ones, and Q/DQ, which must stay in the graph so that
# quantized models keep their quantization (folding DQ(int8 weight) would give back floats).
NO_FOLD = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
    "Multinomial", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "If", "Loop", "Scan", "Dropout",
})
MAX_FOLD_ELEMENTS = 1 << 22  # inputs or outputs bigger than this are computed at run time
_DATA_INPUT_MAX = 1024       # known inputs this small are shown to shape inference as data
# Ops whose output size shape inference cannot give but that never outgrow their input.
_BOUNDED_BY_INPUT = {"NonZero": 8, "Unique": 1, "Compress": 1}  # op -> elements per input element

# Plain numpy dtypes the reference evaluator handles; exotic ones (float8, int4) are not folded.
_PLAIN_KINDS = "biufc"


def fold_constant(node: NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node."""
    for a in node.attribute:
        if a.name == "value":
            return onnx.numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.asarray(a.f, np.float32)
        if a.name == "value_floats":
            return np.asarray(list(a.floats), np.float32)
        if a.name == "value_int":
            return np.asarray(a.i, np.int64)
        if a.name == "value_ints":
            return np.asarray(list(a.ints), np.int64)
        if a.name == "sparse_value":
            return sparse_to_dense(a.sparse_tensor)
        if a.name in ("value_string", "value_strings"):
            raise Unsupported("string constants are not supported")
    raise Unsupported("Constant without a value attribute")


def sparse_to_dense(sp) -> np.ndarray:
    """The dense array of a SparseTensorProto; indices and size checked before allocating."""
    dims = tuple(int(d) for d in sp.dims)
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=object)) > MAX_FOLD_ELEMENTS:
        raise OnnxImportError(f"sparse constant {sp.values.name!r} has dims {list(dims)}: "
                              f"negative, or more than {MAX_FOLD_ELEMENTS} elements dense; refused")
    try:
        values = onnx.numpy_helper.to_array(sp.values).reshape(-1)
        idx = onnx.numpy_helper.to_array(sp.indices).astype(np.int64)
    except (ValueError, TypeError) as e:
        raise OnnxImportError(f"sparse constant {sp.values.name!r} cannot be read: {e}") from None
    numel = int(np.prod(dims, dtype=np.int64))
    if idx.ndim == 2 and idx.shape[1:] == (len(dims),) and idx.shape[0] == values.size:
        bad = np.any((idx < 0) | (idx >= np.asarray(dims, np.int64)), axis=1) if dims else ()
        if np.any(bad):
            raise OnnxImportError(f"sparse constant {sp.values.name!r} has an index outside "
                                  f"its dims {list(dims)}")
        idx = np.ravel_multi_index(tuple(idx.T), dims) if dims else idx.reshape(-1)
    elif idx.ndim != 1 or idx.size != values.size:
        raise OnnxImportError(f"sparse constant {sp.values.name!r}: indices of shape "
                              f"{list(idx.shape)} do not fit {values.size} values in dims {list(dims)}")
    if np.any((idx < 0) | (idx >= numel)):
        raise OnnxImportError(f"sparse constant {sp.values.name!r} has an index outside its "
                              f"{numel} elements")
    out = np.zeros(numel, values.dtype)
    out[idx.reshape(-1)] = values
    return out.reshape(dims)


def fold_shape(node: NodeProto, opset: int, t: TensorType) -> np.ndarray | None:
    """The value of ``Shape``/``Size`` when the needed dims are static."""
    if node.op_type == "Size":
        return np.asarray(t.numel(), np.int64) if t.is_static else None
    start, end = 0, t.rank
    if opset >= 15:
        attrs = {a.name: attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", t.rank)
        start = min(max(start + t.rank if start < 0 else start, 0), t.rank)
        end = min(max(end + t.rank if end < 0 else end, 0), t.rank)
    dims = t.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        return None
    return np.asarray(dims, np.int64)


def foldable(node: NodeProto, domain: str, inputs: Sequence[np.ndarray | None]) -> bool:
    """Whether ``node`` may be evaluated now (inputs known, small, deterministic)."""
    if domain != "" or node.op_type in NO_FOLD or not node.input:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    present = [x for x in inputs if x is not None]
    if len(present) != sum(1 for n in node.input if n):
        return False
    if any(x.dtype.kind not in _PLAIN_KINDS or x.dtype.itemsize > 16 for x in present):
        return False
    return sum(x.size for x in present) <= MAX_FOLD_ELEMENTS


def output_elements(node: NodeProto, opset: int, inputs: Sequence[np.ndarray | None]) -> int | None:
    """Elements of ``node``'s outputs, from the op's type rule, without evaluating it; None if
    the rule cannot tell (the caller then does not fold)."""
    feeds = {n: x for n, x in zip(node.input, inputs) if n and x is not None}
    # Small inputs go in as data (a ConstantOfShape's shape, a Range's limits); big ones by type.
    data = [onnx.numpy_helper.from_array(x, n) for n, x in feeds.items() if x.size <= _DATA_INPUT_MAX]
    typed = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
             for n, x in feeds.items() if x.size > _DATA_INPUT_MAX]
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
            for o in node.output if o]
    model = helper.make_model(helper.make_graph([node], "size", typed, outs, data),
                              opset_imports=[helper.make_opsetid("", opset)])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output
    except Exception:  # the rule refuses these inputs: let the converter say why
        return None
    total = 0
    for o in inferred:
        tt = o.type.tensor_type
        if o.type.HasField("tensor_type") and tt.HasField("shape") and \
                all(d.HasField("dim_value") and d.dim_value >= 0 for d in tt.shape.dim):
            total += int(np.prod([d.dim_value for d in tt.shape.dim], dtype=object))
            continue
        if node.op_type in _BOUNDED_BY_INPUT:
            return _BOUNDED_BY_INPUT[node.op_type] * max((x.size for x in feeds.values()), default=0)
        return None
    return total


def evaluate(node: NodeProto, opset: int, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """Run ``node`` with onnx's reference implementation; None if it cannot, or if its result
    would exceed ``MAX_FOLD_ELEMENTS`` (decided from the type rule, before evaluating)."""
    from onnx.reference import ReferenceEvaluator

    size = output_elements(node, opset, inputs)
    if size is None or size > MAX_FOLD_ELEMENTS:
        return None

    names = [n for n in node.input if n]
    feeds = {n: x for n, x in zip(node.input, inputs) if n}
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype),
                                                  feeds[n].shape) for n in names]
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
            for o in node.output if o]
    g = helper.make_graph([node], "fold", graph_inputs, outs)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            results = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # the reference cannot run it: convert the node instead
        return None
    arrays = []
    for r in results:
        if not isinstance(r, np.ndarray) and not np.isscalar(r):
            return None  # sequences, optionals
        r = np.asarray(r)
        if r.dtype == object or r.size > MAX_FOLD_ELEMENTS:
            return None
        arrays.append(r)
    return arrays
