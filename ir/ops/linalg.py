"""Dense linear algebra beyond dot_general: determinants."""
from __future__ import annotations

from ..registry import define_op
from ..types import dims_equal, is_float
from ._rules import require


def _det(types, attrs):
    (x,) = types
    require(x.rank >= 2 and dims_equal(x.shape[-1], x.shape[-2]),
            f"det takes [..., M, M] matrices, got {x}")
    require(is_float(x.dtype), f"det takes floats, got {x}")
    return [x.with_shape(x.shape[:-2])]


def _det_flops(ins, outs, attrs, symbols):
    m = ins[0].shape[-1]
    m = m if isinstance(m, int) else symbols.get(m, 1)
    return outs[0].numel(symbols) * (2 * m ** 3) // 3  # LU factorization


define_op("det", _det, flops=_det_flops,
          doc="Determinant of each square matrix in the last two dims.")
