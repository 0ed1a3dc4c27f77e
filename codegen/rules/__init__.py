"""Lowering rules; importing this package fills ``codegen.lowering.LOWERINGS``."""
from . import elementwise, nn, reduce, shape, structure  # noqa: F401
