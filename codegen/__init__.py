"""Codegen: IR -> JAX function (one lowering per op), jitted per target or exported."""
from . import rules as _rules  # noqa: F401  (fills the lowering table)
from .executor import executor
from .interpreter import to_jax
from .lowering import LOWERINGS, LoweringError, lowering
from .target import TARGETS, TargetError, check_target, host_has, input_specs, needs_x64, x64_scope

__all__ = ["LOWERINGS", "executor", "LoweringError", "TARGETS", "TargetError", "check_target",
           "host_has", "input_specs", "lowering", "needs_x64", "to_jax", "x64_scope"]
