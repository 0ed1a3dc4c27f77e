"""Call-time argument checks: count, rank, dtype, static dims and the graph's requirements.

Run once per new call signature (a cache miss), so the hot path of a compiled model pays
nothing for them; every refusal is a ``CallError`` naming the argument (position and input
name), what the input expects and what the call gave.
"""
from __future__ import annotations

import jax
import numpy as np

from .errors import CallError
from .ir import TensorType, numpy_dtype


class ArgChecker:
    """Checks call arguments against a graph's inputs: count, rank, dtype, static dims."""

    def __init__(self, inputs: list[tuple[str, TensorType]], model: str, cast_inputs: bool = False,
                 jax_dtypes: bool = False, requires=()):
        self.requires = tuple(requires)  # ir.graph.Requirement: conditions on the symbols
        self.names = [n for n, _ in inputs]
        self.types = [t for _, t in inputs]
        self.dtypes = [numpy_dtype(t.dtype) for t in self.types]
        self.model, self.cast_inputs = model, cast_inputs
        # JAX functions were traced with JAX's dtype rules (f64 -> f32 unless x64 is on):
        # a call gets the same conversion jax.jit would make, and nothing more.
        self.jax_dtypes = jax_dtypes

    def _what(self, i: int) -> str:
        return f"argument #{i} ({self.names[i]!r}) of {self.model}"

    def signature(self) -> str:
        return ", ".join(f"#{i} {n!r}: {t}" for i, (n, t) in enumerate(zip(self.names, self.types)))

    def coerce(self, leaves) -> list:
        """Arguments without shape/dtype (Python scalars, lists) as arrays of the input dtype."""
        out = list(leaves)
        for i, a in enumerate(out):
            if hasattr(a, "shape") and hasattr(a, "dtype"):
                continue
            arr = np.asarray(a)
            if i < len(self.dtypes) and arr.dtype != object:
                # Python numbers carry no precision (JAX's weak types): cast when the kind fits.
                want = self.dtypes[i]
                if arr.dtype != want and np.can_cast(arr.dtype, want, "same_kind"):
                    arr = arr.astype(want)
            out[i] = arr
        return out

    def check(self, leaves) -> tuple[tuple[int, np.dtype], ...]:
        """Raise CallError for arguments that do not fit; the casts needed (cast_inputs)."""
        n, got = len(self.types), len(leaves)
        if got != n:
            if got < n:
                missing = ", ".join(f"#{i} {self.names[i]!r} ({self.types[i]})" for i in range(got, n))
                raise CallError(f"{self.model} takes {n} argument{'s' * (n != 1)} "
                                f"({self.signature()}); got {got}: missing {missing}")
            raise CallError(f"{self.model} takes {n} argument{'s' * (n != 1)} ({self.signature()}); "
                            f"got {got}: {got - n} too many")
        casts = []
        bound: dict[str, tuple[int, int, int]] = {}  # symbol -> (argument, size, axis)
        for i, (a, t, want) in enumerate(zip(leaves, self.types, self.dtypes)):
            shape = tuple(a.shape)
            if len(shape) != t.rank:
                raise CallError(f"{self._what(i)}: expected rank {t.rank} ({t}), got shape "
                                f"{shape} (rank {len(shape)})")
            for axis, (d, size) in enumerate(zip(t.shape, shape)):
                if isinstance(d, int):
                    if d != size:
                        raise CallError(f"{self._what(i)}: expected {t}, got shape {shape}: axis "
                                        f"{axis} must be {d}")
                    continue
                sym = str(d)
                if not sym.isidentifier():
                    continue  # an expression of symbols: checked by the graph's own rules
                if sym in bound and bound[sym][1] != size:
                    j = bound[sym][0]
                    raise CallError(f"{self._what(i)}: axis {axis} is {sym} ({t}), which argument "
                                    f"#{j} ({self.names[j]!r}) binds to {bound[sym][1]}; got shape "
                                    f"{shape}")
                bound.setdefault(sym, (i, size, axis))
            dt = np.dtype(a.dtype)
            if dt != want:
                if (self.cast_inputs and np.can_cast(dt, want, "same_kind")) or (
                        self.jax_dtypes and jax.dtypes.canonicalize_dtype(dt) == want):
                    casts.append((i, want))
                    continue
                how = (f"pass it as {t.dtype} (e.g. x.astype(numpy.{want.name}))"
                       + ("" if self.cast_inputs or not np.can_cast(dt, want, "same_kind") else
                          ", or compile with cast_inputs=True to cast safe kinds "
                          "(f64 -> f32, int -> float)"))
                unsafe = "" if np.can_cast(dt, want, "same_kind") else \
                    f" ({dt.name} -> {want.name} is not a safe cast, so it is never done implicitly)"
                raise CallError(f"{self._what(i)}: expected dtype {t.dtype} ({t}), got {dt.name}"
                                f"{unsafe}; {how}")
        self._check_requires(bound)
        return tuple(casts)

    def _check_requires(self, bound: dict) -> None:
        """A CallError naming the inputs' sizes, the requirement and the node that placed it."""
        for r in self.requires:
            syms = sorted(r.symbols)
            if not syms or any(s not in bound for s in syms):
                continue  # a symbol no input binds directly: the compiled rules decide
            if r.holds({s: bound[s][1] for s in syms}):
                continue
            sizes = ", ".join(f"input {self.names[bound[s][0]]!r} axis {bound[s][2]} ({s}) = "
                              f"{bound[s][1]}" for s in syms)
            where = f" ({r.origin}{': ' + r.reason if r.reason else ''})" if r.origin or r.reason else ""
            raise CallError(f"{self.model}: {sizes}, but the model requires {r.condition()}{where}")


__all__ = ["ArgChecker"]
