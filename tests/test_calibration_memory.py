"""Calibration keeps statistics, not activations: quantize's traced peak does not grow with batches."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tensorsmith import codegen
from tensorsmith.ir import GraphBuilder, TensorType
from tensorsmith.passes import PassContext, run_pipeline


def _graph():
    r = np.random.default_rng(0)
    b = GraphBuilder("wide")
    h = b.input(TensorType(("N", 256), "f32"), "x")
    for i in range(2):
        w = b.param((r.normal(size=(256, 256)) / 16).astype(np.float32), f"w{i}")
        h = b.op("relu", b.op("dot_general", h, w, contracting_dims=((1,), (0,))))
    return b.build([h])


@pytest.mark.parametrize("observer", ["entropy", "percentile", "minmax"])
def test_traced_peak_is_flat_in_the_number_of_batches(observer):
    g = _graph()
    one = (np.random.default_rng(1).normal(size=(512, 256)).astype(np.float32),)
    peaks = {}
    for n in (4, 48):  # 48 batches of activations kept would be 3 x 48 x 512 KiB = 72 MiB
        cal = [one] * n  # the same array: the data itself takes no more room
        ctx = PassContext(executor=codegen.executor, calibration=cal, progress=False)
        run_pipeline(g, f"quantize{{observer={observer},debug_batches=0}}", ctx, verify_ir=False)
        tracemalloc.start()
        ctx = PassContext(executor=codegen.executor, calibration=cal, progress=False)
        run_pipeline(g, f"quantize{{observer={observer},debug_batches=0}}", ctx, verify_ir=False)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[48] < 1.3 * peaks[4] + 2 ** 20, peaks
