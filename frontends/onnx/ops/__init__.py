"""ONNX op converters, one module per op family; importing fills the converter table."""
from . import elementwise, nn, quant, training  # noqa: F401
from . import indexing, resize, sampling, shape  # noqa: F401
from . import attention, control, einsum, reduce, rnn, signal  # noqa: F401
