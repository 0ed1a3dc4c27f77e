"""Op declarations; importing this package fills ``ir.registry.OPS``."""
from . import elementwise, nn, reduce, shape, structure  # noqa: F401
