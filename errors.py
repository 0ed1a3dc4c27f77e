"""The one exception hierarchy: every failure on user input is a ``TensorsmithError``.

Catch ``tensorsmith.TensorsmithError`` for any of them, or a stage's subclass. Each concrete
error also keeps the builtin base it always had (``ValueError``, ``NotImplementedError``...),
so code written against those keeps working. This module imports nothing, so every layer
(``ir`` included) may use it.
"""
from __future__ import annotations


class TensorsmithError(Exception):
    """Base of every error tensorsmith raises about what a user gave it."""


class LoadError(TensorsmithError):
    """A file could not be read: an IR text, its weights, an export, an ONNX file."""


class ModelImportError(TensorsmithError):
    """A model could not be turned into IR (the ONNX node or JAX primitive is named)."""


class VerifyError(TensorsmithError):
    """A graph breaks an IR rule (the node and the rule are named)."""


class PassFailure(TensorsmithError):
    """A pass, its options or the data it needs were refused, or the pass failed."""


class LoweringFailure(TensorsmithError):
    """The IR could not be lowered to JAX/XLA for the target."""


class CallError(TensorsmithError):
    """A compiled or loaded model was called with arguments that do not fit its inputs."""


class ExportError(TensorsmithError):
    """An export could not be written."""


class UsageFailure(TensorsmithError):
    """A command-line or API argument is not valid (names the argument)."""


__all__ = ["CallError", "ExportError", "LoadError", "LoweringFailure", "ModelImportError",
           "PassFailure", "TensorsmithError", "UsageFailure", "VerifyError"]
