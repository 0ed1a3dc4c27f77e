"""Calibration observers: statistics of a tensor in bounded memory, and the scale they imply.

Every observer keeps the exact min/max and a fixed-size histogram whose range grows by
rebinning (never the activations themselves: memory stays flat however many batches run).
``minmax`` uses the exact range; ``percentile``, ``mse`` and ``entropy`` (TensorRT's KL
calibration) choose a clipping range from the histogram.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.ops.quant import INT_QUANT_DTYPES, quant_range
from ..ir.types import numpy_dtype

BINS = 2048
SCHEMES = ("symmetric", "affine")


class Observer:
    """Running statistics of one tensor; ``scale_zero_point`` turns them into parameters."""

    name = "minmax"

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.lo = math.inf   # exact min / max seen
        self.hi = -math.inf
        self.count = 0
        self.hist = np.zeros(bins, np.float64)
        self.edges: tuple[float, float] | None = None  # the histogram's range

    # --- statistics --------------------------------------------------------------------
    def update(self, array) -> None:
        """Add a batch of values (NaN/Inf must be screened by the caller)."""
        a = np.asarray(array, np.float32).reshape(-1)
        if a.size == 0:
            return
        lo, hi = float(a.min()), float(a.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += a.size
        self._grow(self.lo, self.hi)
        h, _ = np.histogram(a, bins=self.bins, range=self.edges)
        self.hist += h

    def _grow(self, lo: float, hi: float) -> None:
        """Widen the histogram's range to cover [lo, hi], moving old counts into the new bins."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero always inside: scales are about it
        if hi - lo == 0:
            hi = lo + 1e-12
        if self.edges is None:
            self.edges = (lo, hi)
            return
        a, b = self.edges
        if lo >= a and hi <= b:
            return
        # grow by at least 2x so repeated small overflows rebin a logarithmic number of times
        start = min(lo, a)
        new = (start, start + max(max(hi, b) - start, 2 * (b - a)))
        centers = a + (np.arange(self.bins) + 0.5) * (b - a) / self.bins
        self.hist, _ = np.histogram(centers, bins=self.bins, range=new, weights=self.hist)
        self.edges = new

    def _abs_hist(self) -> tuple[np.ndarray, float]:
        """Counts of |x| in ``bins`` bins over [0, amax] (from the signed histogram)."""
        a, b = self.edges
        amax = max(abs(a), abs(b))
        centers = a + (np.arange(self.bins) + 0.5) * (b - a) / self.bins
        h, _ = np.histogram(np.abs(centers), bins=self.bins, range=(0, amax), weights=self.hist)
        return h, amax

    # --- parameters --------------------------------------------------------------------
    def clip_range(self, dtype: str, scheme: str) -> tuple[float, float]:
        """The [lo, hi] range to represent (minmax: everything seen)."""
        return self.lo, self.hi

    def scale_zero_point(self, dtype: str, scheme: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(scale, zero point) for ``dtype`` and ``scheme`` from the statistics so far."""
        if self.count == 0:
            raise ValueError("the observer has seen no data")
        lo, hi = self.clip_range(dtype, scheme)
        return params_for_range(lo, hi, dtype, scheme)

    def clipped_fraction(self, lo: float, hi: float) -> float:
        """Fraction of the values seen that fall outside [lo, hi] (from the histogram, each
        bin taken as uniformly filled)."""
        slack = 1e-6 * max(abs(self.lo), abs(self.hi))  # float32 scale * code rounding
        if self.count == 0 or (lo <= self.lo + slack and hi >= self.hi - slack):
            return 0.0
        a, b = self.edges
        e0 = a + np.arange(self.bins) * (b - a) / self.bins
        w = (b - a) / self.bins
        out = np.clip((e0 + w - hi) / w, 0, 1) + np.clip((lo - e0) / w, 0, 1)
        return float(np.sum(self.hist * np.minimum(out, 1)) / self.hist.sum())


class PercentileObserver(Observer):
    """Clip at a percentile of |x| (symmetric) or at both tails (affine)."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = BINS):
        super().__init__(bins)
        self.percentile = percentile

    def clip_range(self, dtype, scheme):
        q = self.percentile / 100
        if scheme == "symmetric" or dtype not in INT_QUANT_DTYPES:
            h, amax = self._abs_hist()
            t = _quantile(h, 0.0, amax, q)
            return max(self.lo, -t), min(self.hi, t)
        a, b = self.edges
        lo = _quantile(self.hist, a, b, 1 - q)
        hi = _quantile(self.hist, a, b, q)
        return max(self.lo, min(lo, 0.0)), min(self.hi, max(hi, 0.0))


def _quantile(hist: np.ndarray, a: float, b: float, q: float) -> float:
    """The value below which a fraction ``q`` of the histogram's mass lies (bin upper edge)."""
    cdf = np.cumsum(hist)
    i = int(np.searchsorted(cdf, q * cdf[-1], side="left"))
    return a + (min(i, len(hist) - 1) + 1) * (b - a) / len(hist)


def _levels(dtype: str, scheme: str) -> int:
    """How many quantization steps cover the clipping range on one side of zero."""
    lo, hi = quant_range(dtype)
    if dtype not in INT_QUANT_DTYPES:
        return 0
    return int(hi) if scheme == "symmetric" and lo < 0 else int(hi - lo) // 2


class MSEObserver(Observer):
    """Clip |x| at the threshold minimising the expected squared quantization error."""

    name = "mse"

    def clip_range(self, dtype, scheme):
        h, amax = self._abs_hist()
        centers = (np.arange(self.bins) + 0.5) * amax / self.bins
        best, best_err = amax, math.inf
        for t in np.linspace(amax / 50, amax, 100):
            err = np.sum(h * _quant_error(centers, t, dtype, scheme))
            if err < best_err:
                best, best_err = float(t), err
        return max(self.lo, -best), min(self.hi, best)


def _quant_error(v: np.ndarray, t: float, dtype: str, scheme: str) -> np.ndarray:
    """Expected squared error of representing |x| = v with range [-t, t]."""
    levels = _levels(dtype, scheme)
    if levels:  # uniform: step^2 / 12 inside, the distance to t outside
        step = t / levels
        inside = np.full_like(v, step * step / 12)
    else:  # float8: relative step of the dtype's mantissa at that magnitude
        low = numpy_dtype(dtype)
        fmax = float(quant_range(dtype)[1])
        mant = np.finfo(low).nmant if hasattr(np.finfo(low), "nmant") else 3
        scaled = np.maximum(v * fmax / t, 2.0 ** -6)
        step = 2.0 ** (np.floor(np.log2(scaled)) - mant) * t / fmax
        inside = step * step / 12
    return np.where(v > t, (v - t) ** 2, inside)


class EntropyObserver(Observer):
    """TensorRT-style calibration: the |x| threshold minimising KL(P || Q), Q quantized to
    ``levels`` bins (128 for int8)."""

    name = "entropy"

    def clip_range(self, dtype, scheme):
        h, amax = self._abs_hist()
        # exact zeros (after a relu, half the values) are represented exactly at any scale:
        # left in, they dominate P and the divergence favours clipping the tail hard
        h = h.copy()
        h[0] = 0
        levels = max(_levels(dtype, scheme), 1) or 128
        levels = levels if dtype in INT_QUANT_DTYPES else 128
        n = self.bins
        best_i, best_kl = n, math.inf
        start = min(levels, n)
        for i in range(start, n + 1, max(1, (n - start) // 256)):
            p = h[:i].astype(np.float64).copy()
            p[i - 1] += h[i:].sum()  # outliers clipped into the last bin
            if p.sum() == 0:
                continue
            q = _expand_quantized(h[:i], levels)
            kl = _kl(p, q)
            if kl < best_kl:
                best_i, best_kl = i, kl
        t = (best_i + 0.5) * amax / n
        return max(self.lo, -t), min(self.hi, t)


def _expand_quantized(p: np.ndarray, levels: int) -> np.ndarray:
    """``p`` merged into ``levels`` bins, then spread evenly over the non-empty source bins."""
    bounds = np.linspace(0, len(p), levels + 1).astype(int)  # len(p) >= levels: no empty chunk
    starts = bounds[:-1]
    sums = np.add.reduceat(p, starts)
    filled = np.add.reduceat((p > 0).astype(np.float64), starts)
    per_bin = np.where(filled > 0, sums / np.maximum(filled, 1), 0.0)
    return np.where(p > 0, np.repeat(per_bin, np.diff(bounds)), 0.0)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    qs = q.sum()
    if qs == 0:
        return math.inf
    q = q / qs
    mask = p > 0
    if (q[mask] == 0).any():
        return math.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


SAMPLE_ROWS = 1024
"""Rows (along the last axis) of each tensor ``AutoObserver`` keeps to compare ranges."""


class AutoObserver(Observer):
    """One histogram, every other observer's range as a candidate, and a bounded sample of rows
    to score them on; ``choose`` keeps the range whose quantization costs the readers least."""

    name = "auto"

    def __init__(self, bins: int = BINS, rows: int = SAMPLE_ROWS, batches: int = 1):
        super().__init__(bins)
        self.rows, self.per_batch = rows, max(1, -(-rows // max(batches, 1)))
        self.sample: list[np.ndarray] = []
        self.chosen: tuple[str, float, float] | None = None
        self._rng = np.random.default_rng(0)

    def update(self, array) -> None:
        super().update(array)
        a = np.asarray(array, np.float32)
        rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
        have = sum(len(r) for r in self.sample)
        take = min(self.per_batch, self.rows - have, len(rows))
        if take > 0:  # spread over the batches: the first batch alone may not be typical
            idx = np.sort(self._rng.choice(len(rows), take, replace=False))
            self.sample.append(rows[idx])

    def candidates(self, dtype: str, scheme: str) -> dict[str, tuple[float, float]]:
        """Each observer's clipping range on this histogram, by name."""
        out = {"minmax": (self.lo, self.hi)}
        for p in (99.9, 99.99, 99.999):
            out[f"percentile {p}"] = PercentileObserver.clip_range(
                _with(self, percentile=p), dtype, scheme)
        out["mse"] = MSEObserver.clip_range(self, dtype, scheme)
        out["entropy"] = EntropyObserver.clip_range(self, dtype, scheme)
        return out

    def choose(self, dtype: str, scheme: str, cost) -> dict[str, float]:
        """Keep the candidate range with the least ``cost(sample, fake_quantized_sample)``;
        returns every candidate's cost."""
        x = np.concatenate(self.sample).astype(np.float64)
        costs = {}
        for name, (lo, hi) in self.candidates(dtype, scheme).items():
            scale, zp = params_for_range(lo, hi, dtype, scheme)
            costs[name] = float(cost(x, fake_quant_np(x, scale, zp, dtype)))
            if self.chosen is None or costs[name] < costs[self.chosen[0]]:
                self.chosen = (name, lo, hi)
        self.sample = []  # scored: the rows are not needed any more
        return costs

    def clip_range(self, dtype, scheme):
        if self.chosen is None:
            return MSEObserver.clip_range(self, dtype, scheme)
        return self.chosen[1], self.chosen[2]


def _with(obs: Observer, **attrs):
    """A shallow copy of ``obs`` with ``attrs`` set (to borrow another observer's rule)."""
    new = object.__new__(type(obs))
    new.__dict__.update(obs.__dict__, **attrs)
    return new


def fake_quant_np(x: np.ndarray, scale, zp, dtype: str) -> np.ndarray:
    """``dequantize(quantize(x))`` in float64 numpy, per-tensor (the oracle of the IR pair)."""
    qlo, qhi = quant_range(dtype)
    s = float(scale)
    z = 0.0 if zp is None else float(zp)
    if dtype in INT_QUANT_DTYPES:
        return (np.clip(np.round(x / s) + z, qlo, qhi) - z) * s
    low = numpy_dtype(dtype)
    return np.clip(x / s, qlo, qhi).astype(np.float32).astype(low).astype(np.float64) * s


OBSERVERS = {"minmax": Observer, "percentile": PercentileObserver, "mse": MSEObserver,
             "entropy": EntropyObserver, "auto": AutoObserver}


def make_observer(kind: str, percentile: float = 99.99, batches: int = 1) -> Observer:
    """An observer by name (minmax | percentile | mse | entropy | auto)."""
    if kind == "percentile":
        return PercentileObserver(percentile)
    if kind == "auto":
        return AutoObserver(batches=batches)
    return OBSERVERS[kind]()


def params_for_range(lo: float, hi: float, dtype: str, scheme: str):
    """(scale, zero point) representing [lo, hi] in ``dtype``; zero point None for float8."""
    qlo, qhi = quant_range(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype not in INT_QUANT_DTYPES:
        amax = max(-lo, hi)
        return np.float32(amax / qhi if amax > 0 else 1.0), None
    zdt = numpy_dtype(dtype)
    if scheme == "symmetric":
        amax = max(-lo, hi)
        if qlo < 0:  # signed: [-qhi, qhi] around 0 (the lowest code unused)
            return np.float32(amax / qhi if amax > 0 else 1.0), np.zeros((), zdt)
        mid = (qlo + qhi + 1) // 2  # unsigned symmetric: zero at mid-range
        return np.float32(amax / (qhi - mid) if amax > 0 else 1.0), np.asarray(mid, zdt)
    scale = (hi - lo) / (qhi - qlo) if hi > lo else 1.0
    zp = int(np.clip(np.round(qlo - lo / scale), qlo, qhi))
    return np.float32(scale), np.asarray(zp, zdt)


def weight_params(w: np.ndarray, dtype: str, scheme: str, axis: int | None,
                  group: tuple[int, int] | None = None, observer: str = "minmax"):
    """Scale and zero point computed from a weight: per tensor (``axis`` None), per channel
    along ``axis``, or per group of ``group[1]`` elements along ``group[0]`` (per channel too).
    ``observer="mse"`` searches a clipping threshold per channel; others use the range."""
    w = np.asarray(w, np.float64)
    if group is not None:
        gaxis, size = group
        n = w.shape[gaxis]
        pad = (-n) % size
        if pad:
            widths = [(0, 0)] * w.ndim
            widths[gaxis] = (0, pad)
            w = np.pad(w, widths, mode="edge")
        shape = list(w.shape)
        shape[gaxis:gaxis + 1] = [shape[gaxis] // size, size]
        blocks = w.reshape(shape)
        lo, hi = blocks.min(axis=gaxis + 1), blocks.max(axis=gaxis + 1)
    elif axis is None:
        lo, hi = np.array(w.min()), np.array(w.max())
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        lo, hi = w.min(axis=red), w.max(axis=red)
    if observer == "mse" and group is None:
        lo, hi = _mse_weight_range(w, lo, hi, axis, dtype, scheme)
    elif observer == "mse":  # per group: the blocks' element axis is gaxis + 1
        lo, hi = _mse_block_range(blocks, lo, hi, group[0] + 1, dtype, scheme)
    flat = [params_for_range(a, b, dtype, scheme) for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
    scale = np.array([s for s, _ in flat], np.float32).reshape(lo.shape)
    zp = None if flat[0][1] is None else np.array([z for _, z in flat]).astype(
        numpy_dtype(dtype)).reshape(lo.shape)
    return scale, zp


def _mse_block_range(blocks, lo, hi, eaxis, dtype, scheme):
    """Per-group clipping ratios (0.5 .. 1 of the group's range) with the least squared
    error, the groups' elements along ``eaxis`` of ``blocks``."""
    best_lo, best_hi = lo.copy(), hi.copy()
    best_err = np.full(lo.shape, np.inf)
    for r in np.linspace(0.5, 1.0, 21):
        cand = [params_for_range(a * r, b * r, dtype, scheme)
                for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
        s = np.expand_dims(np.array([c[0] for c in cand], np.float64).reshape(lo.shape), eaxis)
        z = np.expand_dims(np.array([0 if c[1] is None else float(c[1]) for c in cand])
                           .reshape(lo.shape), eaxis)
        err = np.sum(((_codes(blocks, s, z, dtype) - z) * s - blocks) ** 2, axis=eaxis)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_lo, best_hi = np.where(better, lo * r, best_lo), np.where(better, hi * r, best_hi)
    return best_lo, best_hi


def _codes(x, s, z, dtype):
    """The (float) codes ``x`` gets on the grid ``s``, ``z`` of ``dtype``."""
    qlo, qhi = quant_range(dtype)
    if dtype in INT_QUANT_DTYPES:
        return np.clip(np.round(x / s) + z, qlo, qhi)
    return np.clip(x / s + z, qlo, qhi).astype(np.float32).astype(numpy_dtype(dtype)) \
        .astype(np.float64)


def _mse_weight_range(w, lo, hi, axis, dtype, scheme):
    """Per-channel clipping ratios (of the channel's range) with the least squared error."""
    best_lo, best_hi = lo.copy(), hi.copy()
    best_err = np.full(lo.shape, np.inf)
    red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    qlo, qhi = quant_range(dtype)
    for r in np.linspace(0.5, 1.0, 21):
        cand = [params_for_range(a * r, b * r, dtype, scheme)
                for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
        s = np.array([c[0] for c in cand], np.float64).reshape(lo.shape)
        z = np.array([0 if c[1] is None else float(c[1]) for c in cand]).reshape(lo.shape)
        if axis is not None:
            shape = [1] * w.ndim
            shape[axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        if dtype in INT_QUANT_DTYPES:
            q = np.clip(np.round(w / s) + z, qlo, qhi)
        else:
            q = np.clip(w / s + z, qlo, qhi).astype(np.float32).astype(numpy_dtype(dtype)) \
                .astype(np.float64)
        err = ((q - z) * s - w) ** 2
        err = err.sum(axis=red) if red is not None else np.array(err.sum())
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_lo, best_hi = np.where(better, lo * r, best_lo), np.where(better, hi * r, best_hi)
    return best_lo, best_hi
