"""tensorsmith: a compiler-style graph optimizer for ML models, lowered through JAX/XLA."""
from . import ir
from .api import compile, load, trace
from .bisection import bisect
from .compiled import CacheInfo, CompiledModel, ExportOnlyError, LoadedModel, RecompileWarning
from .passes.quant_debug import quant_report
from .finetune import finetune, polynomial
from .errors import (CallError, ExportError, LoadError, LoweringFailure, ModelImportError,
                     PassFailure, TensorsmithError, UsageFailure, VerifyError)
from .codegen.executor import setup_cpu_dispatch

# Importing does not make JAX's CPU client, so this still can: small programs then run on the
# calling thread instead of being handed to a pool thread (codegen/executor.py).
setup_cpu_dispatch()

__all__ = ["CacheInfo", "CallError", "CompiledModel", "ExportError", "ExportOnlyError", "LoadError", "LoadedModel",
           "LoweringFailure", "ModelImportError", "PassFailure", "RecompileWarning", "TensorsmithError", "UsageFailure",
           "VerifyError", "bisect", "compile", "examples", "finetune", "ir", "load", "polynomial",
           "quant_report", "trace"]
__version__ = "0.1.0"


def __getattr__(name):
    # tensorsmith.examples works after a plain `import tensorsmith`, without importing the
    # bundled weights at start-up.
    if name == "examples":
        import importlib
        return importlib.import_module(".examples", __name__)
    raise AttributeError(f"module 'tensorsmith' has no attribute {name!r}")
