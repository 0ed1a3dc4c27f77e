"""ATen converters, one module per family; importing this fills the table."""
from . import creation, elementwise, indexing, nn, reduce, resample, shape, spectral  # noqa: F401
