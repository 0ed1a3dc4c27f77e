"""Fresh random initializers for the benchmarks' ONNX models (shared by fuse.py and
fold_batchnorm.py)."""
from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import numpy_helper


def redraw_initializers(m, rng: np.random.Generator, weight_std: Callable[[int], float]) -> None:
    """Replace every f32 initializer of ``m`` in place: weights (rank >= 2) N(0, std(fan-in)),
    other vectors N(0, 0.1), batch-norm scales and variances U(0.5, 1.5) so BN stays valid."""
    positive = {n.input[i] for n in m.graph.node if n.op_type == "BatchNormalization"
                for i in (1, 4)}
    for k, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype != np.float32:
            continue
        if init.name in positive:
            b = rng.uniform(0.5, 1.5, a.shape)
        elif a.ndim >= 2:
            b = rng.standard_normal(a.shape) * weight_std(int(np.prod(a.shape[1:])))
        else:
            b = rng.standard_normal(a.shape) * 0.1
        m.graph.initializer[k].CopyFrom(numpy_helper.from_array(b.astype(np.float32), init.name))
