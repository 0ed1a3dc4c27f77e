"""The text form of dims: canonical printing, and a recursive-descent parser (never eval)."""
from __future__ import annotations

import functools
import re

from .dims import (Dim, DimError, DimExpr, DimTypeError, _add, _atom_text, _minmax, _mul, _neg,
                   floordiv, mod)


def format_terms(terms) -> str:
    """The canonical text of a DimExpr's terms (what ``str`` prints)."""
    text = ""
    for n, (mono, coef) in enumerate(terms):
        mag = abs(coef)
        if not mono:
            body = str(mag)
        else:
            # A floordiv atom stands bare only alone and unscaled: 'N*(H+1)//2' would read
            # as (N*(H+1))//2, and a leading '-(H+1)//2' as (-(H+1))//2.
            alone = len(mono) == 1 and mono[0][1] == 1 and mag == 1 and not (n == 0 and coef < 0)
            factors = [f"({_atom_text(a)})" if a[0] == "floordiv" and not alone else _atom_text(a)
                       for a, e in mono for _ in range(e)]
            body = "*".join(([str(mag)] if mag != 1 else []) + factors)
        text += ("-" if coef < 0 else "+" if n else "") + body
    return text


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|[-+*(),%]))")


def parse_dim(text: str) -> Dim:
    """Read a dim from text (the inverse of ``str``); a recursive-descent parser, no eval."""
    if not isinstance(text, str):
        raise DimTypeError(f"dimension text must be a string, got {text!r}")
    return _parse_cached(text)


@functools.lru_cache(maxsize=4096)  # IR text and attributes spell the same dims again and again
def _parse_cached(text: str) -> Dim:
    toks, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise DimError(f"bad dimension {text!r}: unexpected {text[pos:].strip()[:10]!r} "
                           f"at column {pos + 1}")
        pos = m.end()
        num, name, opr = m.groups()
        toks.append(("num", int(num)) if num else ("name", name) if name else ("op", opr))
    if not toks:
        raise DimError(f"bad dimension {text!r}: empty")
    i = 0

    def fail(what):
        where = f"at token {i + 1}" if i < len(toks) else "at the end"
        return DimError(f"bad dimension {text!r}: expected {what} {where}")

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def expect(op):
        nonlocal i
        if peek() != ("op", op):
            raise fail(repr(op))
        i += 1

    def atom():
        nonlocal i
        kind, val = peek()
        if kind is None:
            raise fail("a number, symbol or '('")
        i += 1
        if kind == "num":
            return val
        if kind == "name":
            if val in ("max", "min") and peek() == ("op", "("):
                i += 1
                a = expr()
                expect(",")
                b = expr()
                expect(")")
                return _minmax(val, a, b)
            return DimExpr.symbol(val)
        if val == "(":
            v = expr()
            expect(")")
            return v
        if val == "-":
            return _neg(atom())
        i -= 1
        raise fail("a number, symbol or '('")

    def term():
        nonlocal i
        v = atom()
        while peek() in (("op", "*"), ("op", "//"), ("op", "%")):
            o = peek()[1]
            i += 1
            r = atom()
            v = _mul(v, r) if o == "*" else floordiv(v, r) if o == "//" else mod(v, r)
        return v

    def expr():
        nonlocal i
        v = term()
        while peek() in (("op", "+"), ("op", "-")):
            o = peek()[1]
            i += 1
            r = term()
            v = _add(v, r) if o == "+" else _add(v, _neg(r))
        return v

    result = expr()
    if i != len(toks):
        raise fail("an operator or the end")
    return result
