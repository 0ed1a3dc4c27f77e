"""tensorsmith: a compiler-style graph optimizer for ML models, lowered through JAX/XLA."""
from . import ir
from .api import compile, load, trace
from .compiled import CompiledModel, ExportOnlyError, LoadedModel

__all__ = ["CompiledModel", "ExportOnlyError", "LoadedModel", "compile", "ir", "load", "trace"]
__version__ = "0.1.0"
