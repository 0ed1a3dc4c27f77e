"""ONNX op converters, one module per op family; importing fills the converter table."""
from . import elementwise, nn, quant  # noqa: F401
from . import indexing, resize, sampling, shape  # noqa: F401
from . import einsum, reduce  # noqa: F401
