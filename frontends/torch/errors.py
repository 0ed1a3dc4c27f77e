"""Errors of the PyTorch frontend; each names the ATen op and the module path it came from."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import ModelImportError


class TorchImportError(ModelImportError, ValueError):
    """An ``nn.Module`` cannot be exported or turned into IR (the message says where and why)."""


class Unsupported(Exception):
    """Raised inside a converter: this node cannot be converted (collected, not fatal at once)."""


@dataclass(frozen=True)
class UnsupportedOp:
    """One FX node the frontend could not convert."""

    op: str        # aten.foo.default
    where: str     # module path and source line
    reason: str

    def __str__(self) -> str:
        return f"{self.op} at {self.where or '(top level)'}: {self.reason}"


class UnsupportedOpsError(TorchImportError, NotImplementedError):
    """Every ATen op of the model that cannot be converted, listed at once."""

    def __init__(self, label: str, problems: list[UnsupportedOp]):
        self.problems = list(problems)
        ops = sorted({p.op for p in self.problems})
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{label}: {len(self.problems)} node{'s' if len(self.problems) != 1 else ''}"
                         f" cannot be converted (ATen ops: {', '.join(ops)}):\n{lines}")
