"""Export a graph to ONNX: fake-quant pairs become QuantizeLinear/DequantizeLinear (QDQ).

The float ops map one by one onto ONNX ops (conv in any layout through Transposes, dot_general
as MatMul or Einsum, pools, shape ops, activations); composite nodes are inlined. An op with
no ONNX form is reported, all of them at once, before anything is written.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ExportError
from .ir import Graph, Node, Value
from .ir.ops.nn import conv_spatial
from .ir.serialize import atomic_write
from .ir.types import numpy_dtype

OPSET = 21  # the newest opset written: QuantizeLinear/DequantizeLinear with block_size and int4

_ONNX_DTYPES = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "f16": TensorProto.FLOAT16,
                "bf16": TensorProto.BFLOAT16, "i8": TensorProto.INT8, "u8": TensorProto.UINT8,
                "i16": TensorProto.INT16, "u16": TensorProto.UINT16, "i32": TensorProto.INT32,
                "u32": TensorProto.UINT32, "i64": TensorProto.INT64, "u64": TensorProto.UINT64,
                "bool": TensorProto.BOOL, "i4": TensorProto.INT4, "u4": TensorProto.UINT4,
                "f8e4m3fn": TensorProto.FLOAT8E4M3FN, "f8e5m2": TensorProto.FLOAT8E5M2,
                "f8e4m3fnuz": TensorProto.FLOAT8E4M3FNUZ, "f8e5m2fnuz": TensorProto.FLOAT8E5M2FNUZ}


class OnnxExportError(ExportError, ValueError):
    """The graph has ops or attributes that have no ONNX form here."""


_RULES: dict[str, Callable] = {}


def rule(*ops: str):
    """Register ``fn(ex, node, input names) -> output name`` as the ONNX form of ``ops``."""
    def deco(fn):
        for op in ops:
            _RULES[op] = fn
        return fn
    return deco


class _Unsupported(Exception):
    """A node whose attributes have no ONNX form (collected, then reported together)."""


class _Exporter:
    """Accumulates ONNX nodes and initializers while walking the graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: dict[str, str] = {}
        self.taken: set[str] = set()
        self.problems: list[str] = []

    def fresh(self, hint: str) -> str:
        base = hint.replace("%", "").replace("@", "") or "v"
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def const(self, array, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, values, hint: str = "shape") -> str:
        return self.const(np.asarray(list(values), np.int64), hint)

    def add(self, op: str, inputs, hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def emit(self, nodes, scope: dict[str, str]) -> None:
        """Translate ``nodes``; ``scope`` maps IR value names to ONNX names (updated)."""
        for n in nodes:
            fn = _RULES.get(n.op)
            if fn is None:
                self.problems.append(f"{n.op} (%{n.name})")
                continue
            try:
                if n.op == "quantize" and _all_params(self.graph, n):
                    outs = _quantized_weight(self, n)
                else:
                    outs = fn(self, n, [self.lookup(v, scope) for v in n.inputs], scope)
            except _Unsupported as e:
                self.problems.append(f"{n.op} (%{n.name}: {e})")
                continue
            outs = [outs] if isinstance(outs, str) else list(outs)
            for v, o in zip(n.outputs, outs):
                scope[v.name] = o

    def lookup(self, v: Value, scope: dict[str, str]) -> str:
        if v.name in scope:
            return scope[v.name]
        if v.name in self.graph.params:
            return self.param(v.name)
        return "?"  # an earlier node failed: reported already

    def param(self, name: str) -> str:
        """The initializer of a param, written on first use (unused weights are left out)."""
        if name not in self.names:
            arr = self.graph.params[name]
            if getattr(arr, "abstract", False):
                raise OnnxExportError(f"param @{name} has no data (an abstract weight): load "
                                      "the weights before exporting to ONNX")
            self.names[name] = self.const(arr, name)
        return self.names[name]


def _all_params(graph: Graph, n: Node) -> bool:
    return all(v.name in graph.params and not getattr(graph.params[v.name], "abstract", False)
               for v in n.inputs)


def _dims(v: Value) -> list:
    return [d if isinstance(d, int) else str(d) for d in v.type.shape]


def _static(v: Value, what: str) -> tuple[int, ...]:
    if not v.type.is_static:
        raise _Unsupported(f"{what} needs static shapes, got {v.type}")
    return tuple(v.type.shape)


def _onnx_dtype(dtype: str) -> int:
    if dtype not in _ONNX_DTYPES:
        raise _Unsupported(f"element type {dtype} has no ONNX equivalent")
    return _ONNX_DTYPES[dtype]


# --- element-wise ------------------------------------------------------------------------------
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow", "and": "And", "or": "Or", "xor": "Xor", "eq": "Equal", "lt": "Less",
           "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "rem": "Mod"}
_UNARY = {"exp": "Exp", "log": "Log", "tanh": "Tanh", "sqrt": "Sqrt", "abs": "Abs", "neg": "Neg",
          "relu": "Relu", "logistic": "Sigmoid", "erf": "Erf", "floor": "Floor", "ceil": "Ceil",
          "sign": "Sign", "sin": "Sin", "cos": "Cos", "reciprocal": "Reciprocal", "not": "Not",
          "softplus": "Softplus", "softsign": "Softsign", "is_nan": "IsNaN", "tan": "Tan",
          "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh",
          "asinh": "Asinh", "acosh": "Acosh", "atanh": "Atanh", "selu": "Selu", "mish": "Mish",
          "hard_swish": "HardSwish"}


@rule(*_BINARY)
def _binary(ex, n, ins, scope):
    if n.op == "rem":  # lax.rem takes the dividend's sign: C fmod, for ints too
        return ex.add("Mod", ins, n.name, fmod=1)
    return ex.add(_BINARY[n.op], ins, n.name)


@rule("ne")
def _ne(ex, n, ins, scope):
    return ex.add("Not", [ex.add("Equal", ins, n.name + "_eq")], n.name)


@rule(*_UNARY)
def _unary(ex, n, ins, scope):
    return ex.add(_UNARY[n.op], ins, n.name)


@rule("rsqrt")
def _rsqrt(ex, n, ins, scope):
    return ex.add("Reciprocal", [ex.add("Sqrt", ins, n.name + "_sqrt")], n.name)


@rule("square")
def _square(ex, n, ins, scope):
    return ex.add("Mul", [ins[0], ins[0]], n.name)


@rule("silu")
def _silu(ex, n, ins, scope):
    return ex.add("Mul", [ins[0], ex.add("Sigmoid", ins, n.name + "_sig")], n.name)


@rule("gelu")
def _gelu(ex, n, ins, scope):
    return ex.add("Gelu", ins, n.name, approximate="tanh" if n.attrs.get("approximate") else "none")


@rule("leaky_relu")
def _leaky(ex, n, ins, scope):
    return ex.add("LeakyRelu", ins, n.name, alpha=float(n.attrs.get("alpha", 0.01)))


@rule("elu")
def _elu(ex, n, ins, scope):
    return ex.add("Elu", ins, n.name, alpha=float(n.attrs.get("alpha", 1.0)))


@rule("relu6")
def _relu6(ex, n, ins, scope):
    dt = numpy_dtype(n.output.type.dtype)
    return ex.add("Clip", [ins[0], ex.const(dt.type(0), "zero"), ex.const(dt.type(6), "six")], n.name)


@rule("round")
def _round(ex, n, ins, scope):
    if n.attrs.get("method", "half_to_even") != "half_to_even":
        raise _Unsupported("ONNX Round rounds half to even only")
    return ex.add("Round", ins, n.name)


@rule("integer_pow")
def _ipow(ex, n, ins, scope):
    dt = numpy_dtype(n.output.type.dtype)
    return ex.add("Pow", [ins[0], ex.const(dt.type(n.attrs["y"]), "exponent")], n.name)


@rule("convert")
def _convert(ex, n, ins, scope):
    return ex.add("Cast", ins, n.name, to=_onnx_dtype(n.attrs["dtype"]))


@rule("select")
def _select(ex, n, ins, scope):
    return ex.add("Where", ins, n.name)


@rule("clamp")
def _clamp(ex, n, ins, scope):
    lo, x, hi = ins
    if n.inputs[0].type.rank or n.inputs[2].type.rank:
        return ex.add("Min", [ex.add("Max", [x, lo], n.name + "_lo"), hi], n.name)
    return ex.add("Clip", [x, lo, hi], n.name)


# --- quantization ------------------------------------------------------------------------------
def _qdq_params(ex, n, ins, qdtype: str):
    """(scale, zero point) input names in the shapes ONNX wants (scalars for per tensor)."""
    scale_v = n.inputs[1]
    per_tensor = not n.attrs.get("block_size") and (
        scale_v.type.rank == 0 or (scale_v.type.rank == 1 and scale_v.type.shape[0] == 1))
    scale = ins[1]
    if per_tensor and scale_v.type.rank:
        scale = ex.add("Reshape", [scale, ex.ints([], "scalar")], n.name + "_scale")
    if len(ins) > 2:
        zp = ins[2]
        if per_tensor and n.inputs[2].type.rank:
            zp = ex.add("Reshape", [zp, ex.ints([], "scalar")], n.name + "_zp")
    else:  # ONNX infers the quantized type from the zero point: give one of that type
        shape = () if per_tensor else tuple(scale_v.type.shape)
        zp = ex.const(np.zeros(shape, numpy_dtype(qdtype)), f"{n.name}_zero_point")
    return scale, zp


def _qdq_attrs(n, rank: int) -> dict:
    attrs = {}
    if rank:
        attrs["axis"] = int(n.attrs.get("axis", 1)) % rank
    if n.attrs.get("block_size"):
        attrs["block_size"] = int(n.attrs["block_size"])
    return attrs


def _quantized_weight(ex, n) -> str:
    """quantize(@W, @scale[, @zero_point]) of params: the codes as an initializer, as deployed
    QDQ models carry weights (the float weight is not written)."""
    from .passes.quant_match import quantize_array
    params = ex.graph.params
    a = n.attrs
    zp = params[n.inputs[2].name] if len(n.inputs) > 2 else None
    q = quantize_array(params[n.inputs[0].name], params[n.inputs[1].name], zp,
                       a.get("axis", 1), a.get("block_size", 0), a["dtype"])
    return ex.const(q, f"{n.inputs[0].name}/quantized")


@rule("quantize")
def _quantize(ex, n, ins, scope):
    dtype = n.attrs["dtype"]
    _onnx_dtype(dtype)
    if dtype in ("i2", "u2", "f4e2m1fn"):
        raise _Unsupported(f"no ONNX QuantizeLinear to {dtype} here")
    scale, zp = _qdq_params(ex, n, ins, dtype)
    x = ins[0]
    if n.inputs[0].type.dtype != n.inputs[1].type.dtype:  # ONNX wants x in the scale's type
        x = ex.add("Cast", [x], n.name + "_x", to=_onnx_dtype(n.inputs[1].type.dtype))
    return ex.add("QuantizeLinear", [x, scale, zp], n.name, **_qdq_attrs(n, n.output.type.rank))


@rule("dequantize")
def _dequantize(ex, n, ins, scope):
    scale, zp = _qdq_params(ex, n, ins, n.inputs[0].type.dtype)
    out = ex.add("DequantizeLinear", [ins[0], scale, zp], n.name,
                 **_qdq_attrs(n, n.output.type.rank))
    if n.output.type.dtype != n.inputs[1].type.dtype:
        out = ex.add("Cast", [out], n.name + "_cast", to=_onnx_dtype(n.output.type.dtype))
    return out


# --- linear algebra ---------------------------------------------------------------------------
@rule("dot_general")
def _dot(ex, n, ins, scope):
    lhs, rhs = n.inputs
    if n.attrs.get("preferred_element_type") and n.attrs["preferred_element_type"] != n.inputs[0].type.dtype:
        raise _Unsupported(f"accumulation in {n.attrs['preferred_element_type']} of "
                           f"{lhs.type.dtype} inputs (export the graph before lower-quant)")
    (lc, rc), (lb, rb) = n.attrs["contracting_dims"], n.attrs.get("batch_dims", ((), ()))
    nb = len(lb)
    batch_ok = tuple(lb) == tuple(rb) == tuple(range(nb))
    if batch_ok and tuple(lc) == (lhs.type.rank - 1,) and rhs.type.rank == nb + 2:
        if tuple(rc) == (nb,) and (nb == 0 or lhs.type.rank == nb + 2):
            return ex.add("MatMul", ins, n.name)
        if tuple(rc) == (nb + 1,) and (nb == 0 or lhs.type.rank == nb + 2):
            perm = list(range(nb)) + [nb + 1, nb]
            t = ex.add("Transpose", [ins[1]], n.name + "_wT", perm=perm)
            return ex.add("MatMul", [ins[0], t], n.name)
    letters = iter(string.ascii_letters)
    ls = [next(letters) for _ in range(lhs.type.rank)]
    rs = [None] * rhs.type.rank
    for a, b in zip((*lb, *lc), (*rb, *rc)):
        rs[b] = ls[a]
    rs = [c or next(letters) for c in rs]
    out = [ls[a] for a in lb] + [c for i, c in enumerate(ls) if i not in lb and i not in lc] + \
          [c for i, c in enumerate(rs) if i not in rb and i not in rc]
    eq = f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"
    return ex.add("Einsum", ins, n.name, equation=eq)


def _transpose(ex, name: str, x: str, perm) -> str:
    perm = [int(p) for p in perm]
    return x if perm == sorted(perm) else ex.add("Transpose", [x], name, perm=perm)


@rule("conv")
def _conv(ex, n, ins, scope):
    a = n.attrs
    lspec, rspec, ospec = a["dimension_numbers"]
    if a.get("preferred_element_type") and a["preferred_element_type"] != n.inputs[0].type.dtype:
        raise _Unsupported(f"accumulation in {a['preferred_element_type']} (export the graph "
                           "before lower-quant)")
    nsp = len(lspec) - 2
    if any(d != 1 for d in a.get("lhs_dilation") or ()) or a.get("batch_group_count", 1) != 1:
        raise _Unsupported("lhs dilation / batch groups (transposed conv) have no ONNX Conv form")
    padding = a.get("padding") or ((0, 0),) * nsp
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise _Unsupported("negative padding")
    x = _transpose(ex, n.name + "_x", ins[0],
                   [lspec.index("N"), lspec.index("C")] + conv_spatial(lspec, rspec))
    w = _transpose(ex, n.name + "_w", ins[1],
                   [rspec.index("O"), rspec.index("I")] + conv_spatial(rspec))
    letters = [c for c in rspec if c not in "OI"]
    y = ex.add("Conv", [x, w], n.name + "_nchw" if ospec[:2] != "NC" else n.name,
               strides=list(a.get("window_strides") or (1,) * nsp),
               pads=[p[0] for p in padding] + [p[1] for p in padding],
               dilations=list(a.get("rhs_dilation") or (1,) * nsp),
               group=int(a.get("feature_group_count", 1)),
               kernel_shape=[int(n.inputs[1].type.shape[rspec.index(c)]) for c in letters])
    where = {"N": 0, "C": 1, **{c: 2 + i for i, c in enumerate(letters)}}
    return _transpose(ex, n.name, y, [where[c] for c in ospec])


@rule("reduce_window")
def _pool(ex, n, ins, scope):
    a = n.attrs
    rank = n.inputs[0].type.rank
    win = list(a["window_dimensions"])
    strides = list(a.get("window_strides") or (1,) * rank)
    padding = list(a.get("padding") or ((0, 0),) * rank)
    wdil = list(a.get("window_dilation") or (1,) * rank)
    if any(d != 1 for d in a.get("base_dilation") or ()):
        raise _Unsupported("base dilation")
    if a["kind"] not in ("max", "sum"):
        raise _Unsupported(f"{a['kind']} pooling")
    trivial = [i for i in range(rank) if win[i] == 1 and strides[i] == 1
               and padding[i] == (0, 0) and wdil[i] == 1]
    if len(trivial) < 2:
        raise _Unsupported("a pool needs two unpooled axes (batch and channel)")
    lead = trivial[:2]
    spatial = [i for i in range(rank) if i not in lead]
    perm = lead + spatial
    x = _transpose(ex, n.name + "_x", ins[0], perm)
    attrs = dict(kernel_shape=[win[i] for i in spatial], strides=[strides[i] for i in spatial],
                 pads=[padding[i][0] for i in spatial] + [padding[i][1] for i in spatial],
                 dilations=[wdil[i] for i in spatial])
    if a["kind"] == "max":
        y = ex.add("MaxPool", [x], n.name + "_pool", **attrs)
    else:  # a sum is the average over the full window (zeros padded in) times its size
        avg = ex.add("AveragePool", [x], n.name + "_avg", count_include_pad=1, **attrs)
        size = int(np.prod([win[i] for i in spatial]))
        dt = numpy_dtype(n.output.type.dtype)
        y = ex.add("Mul", [avg, ex.const(dt.type(size), "window_size")], n.name + "_pool")
    return _transpose(ex, n.name, y, list(np.argsort(perm)))


@rule("batch_norm")
def _batch_norm(ex, n, ins, scope):
    x, scale, bias, mean, var = ins
    if n.attrs.get("axis", 1) % n.inputs[0].type.rank != 1:
        raise _Unsupported("batch_norm over an axis other than 1")
    return ex.add("BatchNormalization", [x, scale, bias, mean, var], n.name,
                  epsilon=float(n.attrs.get("epsilon", 1e-5)))


@rule("softmax", "log_softmax")
def _softmax(ex, n, ins, scope):
    return ex.add("Softmax" if n.op == "softmax" else "LogSoftmax", ins, n.name,
                  axis=int(n.attrs.get("axis", -1)))


_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}


@rule(*_REDUCE)
def _reduce(ex, n, ins, scope):
    return ex.add(_REDUCE[n.op], [ins[0], ex.ints(n.attrs["axes"], "axes")], n.name,
                  keepdims=int(bool(n.attrs.get("keepdims", False))))


@rule("argmax", "argmin")
def _argmax(ex, n, ins, scope):
    y = ex.add("ArgMax" if n.op == "argmax" else "ArgMin", ins, n.name + "_i64",
               axis=int(n.attrs["axis"]), keepdims=int(bool(n.attrs.get("keepdims", False))),
               select_last_index=int(bool(n.attrs.get("select_last_index", False))))
    return ex.add("Cast", [y], n.name, to=_onnx_dtype(n.output.type.dtype))


# --- shapes -----------------------------------------------------------------------------------
def _shape_operand(ex, out: Value, what: str) -> str:
    dims = list(out.type.shape)
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if len(symbolic) > 1:
        raise _Unsupported(f"{what} to {out.type} has more than one symbolic dim")
    return ex.ints([-1 if i in symbolic else d for i, d in enumerate(dims)])


@rule("reshape")
def _reshape(ex, n, ins, scope):
    return ex.add("Reshape", [ins[0], _shape_operand(ex, n.output, "reshape")], n.name)


@rule("transpose")
def _transpose_rule(ex, n, ins, scope):
    return ex.add("Transpose", ins, n.name, perm=[int(p) for p in n.attrs["permutation"]])


@rule("broadcast_in_dim")
def _broadcast(ex, n, ins, scope):
    out = _static(n.output, "broadcast_in_dim")
    x = n.inputs[0]
    placed = [1] * len(out)
    for d, size in zip(n.attrs["broadcast_dimensions"], x.type.shape):
        placed[d] = size
    y = ins[0]
    if tuple(placed) != tuple(x.type.shape):
        y = ex.add("Reshape", [y, ex.ints(placed)], n.name + "_placed")
    return y if tuple(placed) == out else ex.add("Expand", [y, ex.ints(out)], n.name)


@rule("squeeze", "expand_dims")
def _squeeze(ex, n, ins, scope):
    return ex.add("Squeeze" if n.op == "squeeze" else "Unsqueeze",
                  [ins[0], ex.ints(n.attrs["axes"], "axes")], n.name)


@rule("concatenate")
def _concat(ex, n, ins, scope):
    return ex.add("Concat", ins, n.name, axis=int(n.attrs["axis"]))


@rule("slice")
def _slice(ex, n, ins, scope):
    a = n.attrs
    rank = n.inputs[0].type.rank
    return ex.add("Slice", [ins[0], ex.ints(a["start"], "starts"), ex.ints(a["limit"], "ends"),
                            ex.ints(range(rank), "axes"),
                            ex.ints(a.get("strides") or (1,) * rank, "steps")], n.name)


@rule("pad")
def _pad(ex, n, ins, scope):
    a = n.attrs
    if any(a.get("interior") or ()) or any(not isinstance(p, int) or p < 0
                                            for p in (*a["low"], *a["high"])):
        raise _Unsupported("interior, negative or symbolic padding")
    return ex.add("Pad", [ins[0], ex.ints([*a["low"], *a["high"]], "pads"), ins[1]], n.name,
                  mode="constant")


@rule("constant")
def _constant(ex, n, ins, scope):
    shape = _static(n.output, "constant")
    arr = np.full(shape, n.attrs["value"], numpy_dtype(n.attrs["dtype"]))
    return ex.add("Constant", [], n.name, value=numpy_helper.from_array(arr))


@rule("composite")
def _composite(ex, n, ins, scope):
    body = n.regions[0]
    inner = dict(scope)
    inner.update({v.name: name for v, name in zip(body.inputs, ins)})
    ex.emit(body.nodes, inner)
    return [ex.lookup(v, inner) for v in body.outputs]


# --- entry points ----------------------------------------------------------------------------
def unsupported_ops(graph: Graph) -> list[str]:
    """Ops in ``graph`` (regions included) that have no ONNX form here."""
    return sorted({n.op for n in graph.walk() if n.op not in _RULES})


def min_opset(graph: Graph) -> int:
    """The oldest opset that expresses ``graph``: 21 for blocked or int4 QDQ, 20 for Gelu, else
    19 (fp8 QDQ). Older is better supported: onnxruntime 1.2x's transpose optimizer rejects
    opset-21 QuantizeLinear nodes it makes itself when it pushes a Transpose through QDQ."""
    need = 19
    for n in graph.walk():
        if n.op in ("quantize", "dequantize"):
            low = n.output.type.dtype if n.op == "quantize" else n.inputs[0].type.dtype
            if n.attrs.get("block_size") or low in ("i4", "u4"):
                need = max(need, 21)
        elif n.op == "gelu":
            need = max(need, 20)
    return need


def to_onnx(graph: Graph, *, opset: int | None = None, producer: str = "tensorsmith") -> onnx.ModelProto:
    """The ONNX model of ``graph`` (OnnxExportError listing every op it cannot express).

    ``opset``: None picks ``min_opset(graph)``; an older one than the graph needs is refused.
    """
    need = min_opset(graph)
    if opset is None:
        opset = need
    elif not need <= opset <= OPSET:
        raise OnnxExportError(f"cannot export @{graph.name} at opset {opset}: it needs "
                              f"{need}..{OPSET}")
    ex = _Exporter(graph)
    scope: dict[str, str] = {}
    for v in graph.inputs:
        scope[v.name] = ex.fresh(v.name)
    ex.emit(graph.nodes, scope)
    if ex.problems:
        raise OnnxExportError(
            f"cannot export @{graph.name} to ONNX: no ONNX form for {'; '.join(ex.problems)}. "
            f"Ops with an ONNX form: {', '.join(sorted(_RULES))}")
    try:
        inputs = [helper.make_tensor_value_info(scope[v.name], _onnx_dtype(v.type.dtype), _dims(v))
                  for v in graph.inputs]
        outs, out_names = [], set()
        for i, v in enumerate(graph.outputs):
            name = ex.lookup(v, scope)
            if name in out_names or name in ex.names.values() or \
                    name in {scope[u.name] for u in graph.inputs}:
                name = ex.add("Identity", [name], f"output_{i}")  # an output read twice or a param
            out_names.add(name)
            outs.append(helper.make_tensor_value_info(name, _onnx_dtype(v.type.dtype), _dims(v)))
    except _Unsupported as e:
        raise OnnxExportError(f"cannot export @{graph.name} to ONNX: {e}") from None
    g = helper.make_graph(ex.nodes, graph.name or "main", inputs, outs, ex.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name=producer)
    model.ir_version = min(model.ir_version, 10)  # what current onnxruntime releases read
    return model


def export_onnx(graph: Graph, path, *, opset: int | None = None) -> Path:
    """Write ``graph`` as an ONNX file (atomically); fake-quant pairs become QDQ nodes."""
    model = to_onnx(graph, opset=opset)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"the ONNX model of @{graph.name} does not validate: {e}") from e
    data = model.SerializeToString()
    if len(data) >= 2 ** 31:
        raise OnnxExportError(f"@{graph.name} is {len(data)} bytes, over protobuf's 2 GiB limit")
    path = Path(path)
    atomic_write(path, data)
    return path


def graph_for_onnx(cm) -> Graph:
    """The graph of a compiled model to write as ONNX: the one before ``lower-quant`` when that
    pass ran (QDQ keeps the fake-quant form; an ONNX runtime picks its own integer kernels)."""
    history = list(cm.history or ())
    for i, rec in enumerate(history):
        if rec.name == "lower-quant":
            return history[i - 1].graph if i else cm.source
    return cm.graph


def export_compiled(cm, path, *, opset: int | None = None) -> Path:
    """``CompiledModel.export_onnx``."""
    return export_onnx(graph_for_onnx(cm), path, opset=opset)
