"""Codegen: IR -> JAX function (one lowering per op), jitted per target or exported."""
from . import rules as _rules  # noqa: F401  (fills the lowering table)
from .executor import executor
from .interpreter import to_jax
from .lowering import LOWERINGS, LoweringError, lowering
from .target import TARGETS, TargetError, check_target, export_graph, host_has, input_specs, jit_graph

__all__ = ["LOWERINGS", "executor", "LoweringError", "TARGETS", "TargetError", "check_target", "export_graph",
           "host_has", "input_specs", "jit_graph", "lowering", "to_jax"]
