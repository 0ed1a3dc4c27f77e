"""tensorsmith: a compiler-style graph optimizer for ML models, lowered through JAX/XLA."""
from . import ir
from .api import compile, load, trace
from .bisection import bisect
from .compiled import CompiledModel, ExportOnlyError, LoadedModel

__all__ = ["CompiledModel", "ExportOnlyError", "LoadedModel", "bisect", "compile", "ir", "load", "trace"]
__version__ = "0.1.0"
