"""tensorsmith: a compiler-style graph optimizer for ML models, lowered through JAX/XLA."""
from . import ir
