"""Value-building helpers every frontend's node context shares (needs ``self.op``)."""
from __future__ import annotations

from ..ir import Value


class ShapeHelpers:
    """convert / reshape / broadcast_to that emit a node only when it changes something."""

    def convert(self, v: Value, dtype: str) -> Value:
        """``v`` cast to ``dtype`` (no node when it already is)."""
        return v if v.dtype == dtype else self.op("convert", v, dtype=dtype)

    def reshape(self, v: Value, shape) -> Value:
        shape = tuple(shape)
        return v if tuple(v.shape) == shape else self.op("reshape", v, shape=shape)

    def broadcast_to(self, v: Value, shape) -> Value:
        """Numpy broadcast of ``v`` to ``shape`` (trailing alignment)."""
        shape = tuple(shape)
        if tuple(v.shape) == shape:
            return v
        offset = len(shape) - v.type.rank
        return self.op("broadcast_in_dim", v, shape=shape,
                       broadcast_dimensions=tuple(range(offset, len(shape))))
