"""Where a composite's body came from: process-local rules a frontend leaves for codegen.

A JAX function with a custom derivative (``jax.custom_jvp`` / ``custom_vjp``) is imported as a
composite whose body is its primal computation; the derivative rule itself is Python and
cannot live in the IR. The frontend records here how to call the original function for that
body, and codegen calls it in place of a body whose text is still the traced one (passes
rebuild bodies they do not change). A body a pass rewrote, or a graph loaded from a file,
lowers as it is, with the derivative JAX gives its ops. Nothing here is printed or saved;
a record lives as long as the traced body does.
"""
from __future__ import annotations

import weakref
from typing import Callable

# (name, body text, input (shape, dtype)s) -> (weak ref to the traced body, fn(args, params))
_RULES: dict[tuple, tuple] = {}


def _key(name: str, body, inputs) -> tuple:
    return (name, body.to_text(), tuple(inputs))


def record(name: str, body, fn: Callable, inputs: tuple) -> None:
    """Remember that ``fn(args, params) -> outputs`` computes ``body``, custom derivative and
    all, for inputs of ``inputs`` ((shape, numpy dtype) each)."""
    key = _key(name, body, inputs)
    _RULES[key] = (weakref.ref(body, lambda _r, k=key: _RULES.pop(k, None)), fn)


def original_rule(name: str, body, inputs) -> Callable | None:
    """The recorded ``fn`` for a body with this text, called with inputs of ``inputs``."""
    if not _RULES:
        return None
    hit = _RULES.get(_key(name, body, inputs))
    return None if hit is None or hit[0]() is None else hit[1]
