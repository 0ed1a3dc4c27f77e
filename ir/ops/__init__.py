"""Op declarations; importing this package fills ``ir.registry.OPS``."""
from . import elementwise, nn, reduce, shape, structure  # noqa: F401
from . import control, linalg, signal  # noqa: F401
from . import indexing, quant  # noqa: F401
