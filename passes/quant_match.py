"""What lower-quant matches: fake-quant pairs with constant parameters, quantized weights,
the geometry of a dot/conv, and numpy twins of the quantize/dequantize lowerings."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Node, Value
from ..ir.ops.quant import FLOAT_QUANT_DTYPES, INT_QUANT_DTYPES, quant_range
from ..ir.types import TensorType, itemsize_bits, numpy_dtype
from .rewrite import Rewriter

NARROW_INT = tuple(d for d in INT_QUANT_DTYPES if itemsize_bits(d) <= 8)
F8 = tuple(d for d in FLOAT_QUANT_DTYPES if d.startswith("f8"))


# --- numpy twins of the quantize / dequantize lowerings (codegen/rules/quant.py) ---------------
def _expand(p: np.ndarray, shape, axis: int, block: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against ``shape`` (as ``rules.quant.expand``)."""
    rank = len(shape)
    if p.ndim == 0 or (p.ndim == 1 and p.shape[0] == 1 and not block):
        return p.reshape(())
    axis %= rank
    if block:
        return np.repeat(p, block, axis=axis)[tuple(
            slice(0, shape[axis]) if i == axis else slice(None) for i in range(rank))]
    return p.reshape(tuple(shape[axis] if i == axis else 1 for i in range(rank)))


def quantize_array(w: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int,
                   block: int, dtype: str) -> np.ndarray:
    """``quantize`` computed in numpy with the lowering's arithmetic (bit-identical)."""
    ct = np.float64 if np.float64 in (w.dtype, scale.dtype) else np.float32
    s = _expand(np.asarray(scale, ct), w.shape, axis, block)
    z = _expand(np.asarray(zp, ct), w.shape, axis, block) if zp is not None else ct(0)
    lo, hi = quant_range(dtype)
    v = np.asarray(w, ct) / s
    if dtype in INT_QUANT_DTYPES:
        return np.clip(np.round(v) + z, lo, hi).astype(np.int32).astype(numpy_dtype(dtype))
    return np.clip(v + z, lo, hi).astype(numpy_dtype(dtype))


def dequantize_array(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int,
                     block: int, dtype=None) -> np.ndarray:
    """``dequantize`` in numpy: ``(q - zp) * scale`` in the scale's float type."""
    ct = np.float64 if scale.dtype == np.float64 else np.float32
    y = np.asarray(q, ct)
    if zp is not None:
        y = y - _expand(np.asarray(zp, ct), q.shape, axis, block)
    return (y * _expand(np.asarray(scale, ct), q.shape, axis, block)).astype(dtype or scale.dtype)


# --- matching -----------------------------------------------------------------------------------
def const_array(rw: Rewriter, v: Value) -> np.ndarray | None:
    """A param's or constant's value, else None."""
    arr = rw.param_array(v)
    if arr is not None:
        return None if getattr(arr, "abstract", False) else np.asarray(arr)
    n = rw.producer(v)
    if n is not None and n.op == "constant" and all(isinstance(d, int) for d in v.type.shape):
        return np.full(tuple(n.attrs.get("shape") or ()), n.attrs["value"],
                       numpy_dtype(n.attrs["dtype"]))
    return None


@dataclass(frozen=True)
class QParams:
    """The constant quantization parameters of a quantize/dequantize node."""

    scale: np.ndarray
    zp: np.ndarray | None
    axis: int
    block: int
    dtype: str

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1 and not self.block

    @property
    def zero_free(self) -> bool:
        return self.zp is None or not np.any(self.zp)

    def same(self, other: "QParams") -> bool:
        zs = (self.zp is None or not np.any(self.zp)) and (other.zp is None or not np.any(other.zp))
        return (self.dtype == other.dtype and self.block == other.block
                and (self.per_tensor or self.axis == other.axis)
                and np.array_equal(self.scale.reshape(-1), other.scale.reshape(-1))
                and (zs or (self.zp is not None and other.zp is not None
                            and np.array_equal(self.zp.reshape(-1), other.zp.reshape(-1)))))


def qparams(rw: Rewriter, n: Node, dtype: str) -> QParams | None:
    scale = const_array(rw, n.inputs[1])
    zp = const_array(rw, n.inputs[2]) if len(n.inputs) > 2 else None
    if scale is None or (len(n.inputs) > 2 and zp is None):
        return None
    return QParams(scale, zp, n.attrs.get("axis", 1), n.attrs.get("block_size", 0), dtype)


@dataclass(frozen=True)
class QWeight:
    """A weight read through ``dequantize``: its quantized values and parameters."""

    dq: Node
    q: np.ndarray
    qp: QParams
    name: str            # the param the values come from
    stored_low: bool     # already a low-dtype param (no quantize in the graph)

    @property
    def stem(self) -> str:
        """The weight's name for params made from it (``w`` for ``w`` and ``w/q``)."""
        return self.name.removesuffix("/q")


def match_weight(rw: Rewriter, v: Value) -> QWeight | None:
    """``v = dequantize(Wq_param)`` or ``dequantize(quantize(W_param))`` with constant params."""
    dq = rw.producer(v)
    return weight_of(rw, dq) if dq is not None and dq.op == "dequantize" else None


def weight_of(rw: Rewriter, dq: Node) -> QWeight | None:
    """``match_weight`` for the dequantize node itself."""
    src = dq.inputs[0]
    qp = qparams(rw, dq, src.type.dtype)
    if qp is None:
        return None
    arr = const_array(rw, src) if rw.is_param(src) else None
    if arr is not None:
        return QWeight(dq, arr, qp, src.name, True)
    qn = rw.producer(src)
    if qn is None or qn.op != "quantize" or not rw.is_param(qn.inputs[0]):
        return None
    w = const_array(rw, qn.inputs[0])
    qq = qparams(rw, qn, qn.attrs["dtype"])
    if w is None or qq is None or not qq.same(qp):
        return None
    return QWeight(dq, quantize_array(w, qq.scale, qq.zp, qq.axis, qq.block, qq.dtype), qp,
                   qn.inputs[0].name, False)


@dataclass(frozen=True)
class QAct:
    """An activation read through ``dequantize`` with constant, per-tensor parameters."""

    q: Value                # the quantized tensor
    quantize: Node | None   # its quantize node in this graph, if any (None: a body input ...)
    qp: QParams             # (for a dynamic scale: scale 1, the real one is ``dynamic_scale``)
    dynamic_scale: Value | None = None  # a per-tensor scale the program computes per call


def match_activation(rw: Rewriter, v: Value) -> QAct | str | None:
    """The fake-quant pair (or dequantize of a quantized tensor) making ``v``; a string says
    why it cannot run in low precision."""
    dq = rw.producer(v)
    if dq is None or dq.op != "dequantize" or rw.is_param(dq.inputs[0]):
        return None
    qn = rw.producer(dq.inputs[0])
    if qn is None or qn.op != "quantize":
        qp = qparams(rw, dq, dq.inputs[0].type.dtype)
        if qp is None or not qp.per_tensor or qp.dtype not in NARROW_INT + F8:
            return None
        return QAct(dq.inputs[0], None, qp)
    if rw.is_param(qn.inputs[0]):
        return None
    qp, qq = qparams(rw, dq, qn.attrs["dtype"]), qparams(rw, qn, qn.attrs["dtype"])
    if qp is None or qq is None:
        return _dynamic(rw, qn, dq)
    if not qp.same(qq):
        return f"quantize %{qn.name} and dequantize %{dq.name} use different parameters"
    if not qp.per_tensor:
        return f"the activation %{qn.inputs[0].name} is quantized per axis (needs per tensor)"
    return QAct(qn.output, qn, qp)


def _dynamic(rw: Rewriter, qn: Node, dq: Node) -> QAct | str:
    """A pair whose one scalar scale is computed per call (dynamic quantization), zero point 0."""
    s = qn.inputs[1]
    same = dq.inputs[1].name == s.name and len(qn.inputs) == len(dq.inputs)
    zp_free = len(qn.inputs) == 2 or (
        qn.inputs[2].name == dq.inputs[2].name
        and (z := const_array(rw, qn.inputs[2])) is not None and not np.any(z))
    if not (same and zp_free and (s.type.rank == 0 or tuple(s.type.shape) == (1,))):
        return (f"the activation scale of %{qn.name} is computed at run time and is not one "
                "shared per-tensor scale with a zero point of 0")
    one = np.ones((), np.float32)
    return QAct(qn.output, qn, QParams(one, None, 0, 0, qn.attrs["dtype"]), s)


# --- geometry of a dot / conv ---------------------------------------------------------------
@dataclass(frozen=True)
class Linear:
    """Where the weight of a dot/conv sits and how its axes map to the output."""

    side: int                     # input index of the weight
    contract: tuple[int, ...]     # weight axes summed over
    out_axis: dict                # weight axis -> output axis (free weight axes)
    k: int                        # products summed per output element


def linear_geometry(node: Node, side: int) -> Linear | None:
    """The weight geometry of ``node`` with its weight at input ``side`` (None: unsupported)."""
    w = node.inputs[side].type
    if node.op == "conv":
        if side != 1:
            return None
        _, rspec, ospec = node.attrs["dimension_numbers"]
        if node.attrs.get("batch_group_count", 1) != 1:
            return None
        contract = tuple(i for i, c in enumerate(rspec) if c != "O")
        k = int(np.prod([w.shape[i] for i in contract]))
        return Linear(1, contract, {rspec.index("O"): ospec.index("C")}, k)
    (lc, rc), (lb, rb) = node.attrs["contracting_dims"], node.attrs.get("batch_dims", ((), ()))
    if lb or rb:
        return None
    contract = tuple(rc if side == 1 else lc)
    free = [i for i in range(w.rank) if i not in contract]
    x = node.inputs[1 - side].type
    start = (x.rank - len(lc)) if side == 1 else 0
    if not all(isinstance(w.shape[i], int) for i in range(w.rank)):
        return None
    k = int(np.prod([w.shape[i] for i in contract]))
    return Linear(side, contract, {a: start + j for j, a in enumerate(free)}, k)


def channel_shape(out: TensorType, out_axis: int, values: np.ndarray) -> np.ndarray:
    """A per-channel vector (or scalar) shaped to broadcast along ``out_axis`` of ``out``."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape((values.size,) + (1,) * (out.rank - 1 - out_axis))
