"""Lowering rules; importing this package fills ``codegen.lowering.LOWERINGS``."""
from . import elementwise, nn, reduce, shape, structure  # noqa: F401
from . import control, linalg, signal  # noqa: F401
from . import indexing, quant, softmax  # noqa: F401
