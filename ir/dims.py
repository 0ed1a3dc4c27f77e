"""Symbolic dimensions: integer polynomials over symbols and floordiv/max/min atoms, in normal form.

A dim is an ``int`` or a ``DimExpr``. Symbols stand for sizes >= 1. ``e % k`` is ``e - k*(e//k)``.
Two dims are equal exactly when their normal forms are (no sampling). Comparisons that the
bounds cannot decide answer ``None`` (``dim_ge``) or raise ``InconclusiveDimension``.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import re
from typing import Union

from ..errors import VerifyError

INF = math.inf
RESERVED = frozenset({"max", "min", "mod", "floordiv"})
"""Names that are operators in dim text (here or in jax.export's), never symbols."""


class DimError(VerifyError, ValueError):
    """A dimension that is not valid: bad text, division by zero, a negative size."""


class DimTypeError(DimError, TypeError):
    """Something that is not a dim (a bool, a float, a list) where a dim belongs."""


class InconclusiveDimension(DimError):
    """A comparison of symbolic dims that their bounds cannot decide."""


# An atom is ("sym", name), ("floordiv", expr, k) or ("max"/"min", expr_or_int, expr_or_int).
# A monomial is a sorted tuple of (atom, exponent); a DimExpr is a sorted tuple of
# (monomial, coefficient) with the constant under the empty monomial.


def _atom_text(atom) -> str:
    kind = atom[0]
    if kind == "sym":
        return atom[1]
    if kind == "floordiv":
        e = atom[1]
        inner = str(e) if _is_single_symbol(e) else f"({e})"
        return f"{inner}//{atom[2]}"
    return f"{kind}({atom[1]},{atom[2]})"


def _is_single_symbol(e) -> bool:
    return isinstance(e, DimExpr) and len(e.terms) == 1 and e.terms[0][1] == 1 \
        and len(e.terms[0][0]) == 1 and e.terms[0][0][0][1] == 1 and e.terms[0][0][0][0][0] == "sym"


def _mono_key(mono) -> tuple:
    degree = sum(e for _, e in mono)
    return (-degree, tuple((_atom_text(a), -e) for a, e in mono))


class DimExpr:
    """A symbolic dimension in normal form (frozen, hashable); constants are plain ints."""

    __slots__ = ("terms", "_text", "_hash", "_bounds")

    def __init__(self, terms):
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "_text", None)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_bounds", None)

    def __setattr__(self, name, value):
        raise AttributeError("DimExpr is immutable")

    # --- construction ------------------------------------------------------------------
    @staticmethod
    def symbol(name: str) -> "DimExpr":
        """The dim named ``name`` (an identifier)."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) \
                or name in RESERVED:
            raise DimError(f"dimension symbol must be an identifier other than "
                           f"{', '.join(sorted(RESERVED))}, got {name!r}")
        return _atom_expr(("sym", name))

    # --- inspection --------------------------------------------------------------------
    @property
    def symbols(self) -> frozenset:
        """The symbol names this dim mentions."""
        out = set()
        for mono, _ in self.terms:
            for atom, _ in mono:
                out |= _atom_symbols(atom)
        return frozenset(out)

    @property
    def is_symbol(self) -> bool:
        """True for a bare symbol such as ``N``."""
        return _is_single_symbol(self)

    def __str__(self) -> str:
        if self._text is None:
            object.__setattr__(self, "_text", format_terms(self.terms))
        return self._text

    def __repr__(self) -> str:
        return f"DimExpr({str(self)!r})"

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(str(self)))
        return self._hash

    def __eq__(self, other) -> bool:
        if isinstance(other, DimExpr):
            return self.terms == other.terms
        if isinstance(other, str):  # IR text and older code spell dims as strings
            try:
                return parse_dim(other) == self
            except DimError:
                return False
        return False

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __reduce__(self):
        return (parse_dim, (str(self),))

    # --- arithmetic ----------------------------------------------------------------------
    def __add__(self, other):
        return _add(self, other)

    __radd__ = __add__

    def __neg__(self):
        return _scale(self, -1)

    def __pos__(self):
        return self

    def __sub__(self, other):
        return _add(self, _neg(other))

    def __rsub__(self, other):
        return _add(other, _scale(self, -1))

    def __mul__(self, other):
        return _mul(self, other)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        return floordiv(self, other)

    def __rfloordiv__(self, other):
        return floordiv(other, self)

    def __mod__(self, other):
        return mod(self, other)

    def __rmod__(self, other):
        return mod(other, self)

    def __ge__(self, other):
        return _decide(dim_ge(self, other), self, ">=", other)

    def __gt__(self, other):
        return _decide(dim_ge(self, _add(other, 1)), self, ">", other)

    def __le__(self, other):
        return _decide(dim_ge(other, self), self, "<=", other)

    def __lt__(self, other):
        return _decide(dim_ge(other, _add(self, 1)), self, "<", other)

    def __int__(self):
        raise DimError(f"dimension {self} is symbolic, not an int")

    def evaluate(self, env: dict, default=None):
        """The value with symbols bound (ints or jax symbolic dims); ``default`` for unbound."""
        total = 0
        for mono, coef in self.terms:
            val = coef
            for atom, e in mono:
                a = _eval_atom(atom, env, default)
                for _ in range(e):
                    val = val * a
            total = total + val
        return total


Dim = Union[int, DimExpr]


def _decide(answer, a, op, b) -> bool:
    if answer is None:
        raise InconclusiveDimension(f"cannot decide {a} {op} {b} for all sizes >= 1")
    return answer


def _atom_symbols(atom) -> set:
    if atom[0] == "sym":
        return {atom[1]}
    return set().union(*(dim_symbols(x) for x in atom[1:] if isinstance(x, DimExpr)))


def _eval_atom(atom, env, default):
    kind = atom[0]
    if kind == "sym":
        if atom[1] in env:
            return env[atom[1]]
        if default is not None:
            return default
        raise DimError(f"dimension symbol {atom[1]!r} is not bound")
    a = eval_dim(atom[1], env, default)
    b = eval_dim(atom[2], env, default)
    if kind == "floordiv":
        return a // b
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b) if kind == "max" else min(a, b)
    from jax._src import core  # jax symbolic dims: max/min without a decision
    return core.max_dim(a, b) if kind == "max" else core.min_dim(a, b)


# --- polynomial arithmetic ------------------------------------------------------------

def _terms_of(x) -> dict:
    if isinstance(x, DimExpr):
        return dict(x.terms)
    return {(): _as_int(x)} if _as_int(x) else {}


def _as_int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        import numpy as np
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, str):
            raise DimError(f"dimension text {x!r} in arithmetic: parse it with parse_dim first")
        raise DimTypeError(f"dimension must be an int or a DimExpr, got {x!r}")
    return x


def _make(terms: dict) -> Dim:
    items = [(m, c) for m, c in terms.items() if c != 0]
    if not items:
        return 0
    if len(items) == 1 and items[0][0] == ():
        return items[0][1]
    if all(m == () for m, _ in items):
        return sum(c for _, c in items)
    items.sort(key=lambda mc: (0, _mono_key(mc[0])) if mc[0] else (1,))
    return DimExpr(tuple(items))


def _add(a, b) -> Dim:
    if not isinstance(a, DimExpr) and not isinstance(b, DimExpr):
        return _as_int(a) + _as_int(b)
    t = _terms_of(a)
    for m, c in _terms_of(b).items():
        t[m] = t.get(m, 0) + c
    return _make(t)


def _neg(x) -> Dim:
    return _scale(x, -1) if isinstance(x, DimExpr) else -_as_int(x)


def _scale(x, k: int) -> Dim:
    return _make({m: c * k for m, c in _terms_of(x).items()})


def _mono_mul(m1, m2) -> tuple:
    exps = dict(m1)
    for a, e in m2:
        exps[a] = exps.get(a, 0) + e
    return tuple(sorted(exps.items(), key=lambda ae: (_atom_text(ae[0]), ae[1])))


def _mul(a, b) -> Dim:
    if not isinstance(a, DimExpr) and not isinstance(b, DimExpr):
        return _as_int(a) * _as_int(b)
    out: dict = {}
    for m1, c1 in _terms_of(a).items():
        for m2, c2 in _terms_of(b).items():
            m = _mono_mul(m1, m2)
            out[m] = out.get(m, 0) + c1 * c2
    return _make(out)


def _atom_expr(atom) -> DimExpr:
    mono = ((atom, 1),)
    return DimExpr(((mono, 1),))


def floordiv(a, b) -> Dim:
    """``a // b`` (floor); ``b`` a positive int, or a dim that divides ``a`` exactly."""
    if isinstance(b, DimExpr):
        q = exact_div(a, b)
        if q is None:
            raise DimError(f"cannot divide {a} by the symbolic dim {b} (not an exact multiple)")
        return q
    k = _as_int(b)
    if k == 0:
        raise DimError(f"division by zero in dimension {a}//0")
    if k < 0:
        raise DimError(f"dimension {a}//{k} divides by a negative number")
    if not isinstance(a, DimExpr):
        return _as_int(a) // k
    if k == 1:
        return a
    quot, rem = {}, {}
    for m, c in a.terms:
        q, r = divmod(c, k)
        if q:
            quot[m] = q
        if r:
            rem[m] = r
    if not rem or list(rem) == [()]:  # remainder is a constant in [0, k)
        return _make(quot)
    g = math.gcd(k, *(c for m, c in rem.items() if m))
    if g > 1:  # (g*R + r0)//(g*k') == (R + r0//g)//k' for 0 <= r0 < k
        rem = {m: (c // g) for m, c in rem.items()}
        k //= g
        if k == 1:
            return _add(_make(quot), _make(rem))
    r0 = rem.pop((), 0)
    if len(rem) == 1:  # (X//a + r0)//k == (X + a*r0)//(a*k)
        ((mono, c),) = rem.items()
        if c == 1 and len(mono) == 1 and mono[0][1] == 1 and mono[0][0][0] == "floordiv":
            _, x, inner = mono[0][0]
            return _add(_make(quot), floordiv(_add(x, inner * r0), inner * k))
    if r0:
        rem[()] = r0
    r = _make(rem)
    lo, hi = bounds(r)
    if lo >= 0 and hi < k:
        return _make(quot)
    if lo >= k and hi < 2 * k:
        return _add(_make(quot), 1)
    return _add(_make(quot), _atom_expr(("floordiv", r, k)))


def mod(a, b) -> Dim:
    """``a % b`` for a positive int ``b``, as ``a - b*(a//b)``."""
    if isinstance(b, DimExpr):
        if exact_div(a, b) is not None:
            return 0
        raise DimError(f"cannot take {a} modulo the symbolic dim {b}")
    k = _as_int(b)
    return _add(a, _scale(floordiv(a, k), -k))


def exact_div(a, b) -> Dim | None:
    """``a / b`` when ``b`` divides ``a`` as polynomials (b a single term), else None."""
    if not isinstance(b, DimExpr):
        k = _as_int(b)
        if k == 0:
            raise DimError(f"division by zero in dimension {a}/0")
        if not isinstance(a, DimExpr):
            return _as_int(a) // k if _as_int(a) % k == 0 else None
        if all(c % k == 0 for _, c in a.terms):
            return _make({m: c // k for m, c in a.terms})
        return None
    if a == b:
        return 1
    if len(b.terms) != 1:
        return None
    ((bm, bc),) = b.terms
    out = {}
    for m, c in _terms_of(a).items():
        if c % bc:
            return None
        exps = dict(m)
        for atom, e in bm:
            if exps.get(atom, 0) < e:
                return None
            exps[atom] -= e
        mono = tuple(sorted(((x, e) for x, e in exps.items() if e),
                            key=lambda ae: (_atom_text(ae[0]), ae[1])))
        out[mono] = out.get(mono, 0) + c // bc
    return _make(out)


def _minmax(kind: str, a, b) -> Dim:
    if not isinstance(a, DimExpr) and not isinstance(b, DimExpr):
        return max(_as_int(a), _as_int(b)) if kind == "max" else min(_as_int(a), _as_int(b))
    ge = dim_ge(a, b)
    if ge is None and dim_ge(b, a):
        ge = False
    if ge is not None:
        return (a if ge else b) if kind == "max" else (b if ge else a)
    # max(a+c, b+c) == max(a, b) + c: pull the shared constant out so forms stay canonical.
    ca, cb = _terms_of(a).get((), 0), _terms_of(b).get((), 0)
    c = min(ca, cb)
    if c:
        return _add(_minmax(kind, _add(a, -c), _add(b, -c)), c)
    x, y = sorted((a, b), key=lambda d: (isinstance(d, DimExpr), str(d)))
    return _atom_expr((kind, x, y))


def dim_max(a, b) -> Dim:
    """``max(a, b)``, simplified when the bounds decide it."""
    return _minmax("max", a, b)


def dim_min(a, b) -> Dim:
    """``min(a, b)``, simplified when the bounds decide it."""
    return _minmax("min", a, b)


# --- bounds and comparisons -------------------------------------------------------------

def _imul(a, b):
    return 0 if a == 0 or b == 0 else a * b


def _interval_mul(x, y):
    cands = [_imul(p, q) for p in x for q in y]
    return min(cands), max(cands)


def _atom_bounds(atom):
    kind = atom[0]
    if kind == "sym":
        return 1, INF
    lo1, hi1 = bounds(atom[1])
    if kind == "floordiv":
        k = atom[2]
        return (lo1 if lo1 in (-INF, INF) else lo1 // k), (hi1 if hi1 in (-INF, INF) else hi1 // k)
    lo2, hi2 = bounds(atom[2])
    return (max(lo1, lo2), max(hi1, hi2)) if kind == "max" else (min(lo1, lo2), min(hi1, hi2))


def bounds(d) -> tuple:
    """Inclusive (low, high) over all symbol values >= 1; ``inf`` when unbounded."""
    if not isinstance(d, DimExpr):
        return _as_int(d), _as_int(d)
    if d._bounds is not None:
        return d._bounds
    lo = hi = 0
    for mono, coef in d.terms:
        iv = (coef, coef)
        for atom, e in mono:
            ab = _atom_bounds(atom)
            for _ in range(e):
                iv = _interval_mul(iv, ab)
        lo, hi = lo + iv[0], hi + iv[1]
    object.__setattr__(d, "_bounds", (lo, hi))
    return lo, hi


# Requirements (``expr >= 0``, see ir.graph.Requirement) that comparisons may take as facts:
# a tuple of collections, each read when asked (an importer's list grows as it converts).
_ASSUMED: contextvars.ContextVar = contextvars.ContextVar("tensorsmith_assumed", default=())


@contextlib.contextmanager
def assuming(requirements):
    """Within the block, ``dim_ge`` may use these requirements (``.expr >= 0``) as facts."""
    token = _ASSUMED.set((*_ASSUMED.get(), requirements))
    try:
        yield
    finally:
        _ASSUMED.reset(token)


def dim_ge(a, b) -> bool | None:
    """``a >= b`` for all symbol values >= 1 (and the requirements assumed): True, False, or
    None when undecided."""
    if a == b:
        return True
    d = _add(a, _neg(b))
    answer = _ge0(d, 6)
    if answer is None:
        for group in _ASSUMED.get():
            for req in group:
                e = getattr(req, "expr", req)
                if isinstance(e, DimExpr) and _ge0(_add(d, _neg(e)), 6) is True:
                    return True  # a - b >= e >= 0
    return answer


def _ge0(d, depth: int) -> bool | None:
    """Whether ``d >= 0`` everywhere (True), ``d < 0`` everywhere (False), or undecided."""
    lo, hi = bounds(d)
    if lo >= 0:
        return True
    if hi < 0:
        return False
    if depth == 0 or not isinstance(d, DimExpr):
        return None
    for mono, c in d.terms:
        if len(mono) != 1 or mono[0][1] != 1 or mono[0][0][0] == "sym":
            continue
        atom = mono[0][0]
        rest = _add(d, _scale(_atom_expr(atom), -c))
        if atom[0] == "floordiv":
            # k*(e//k) lies in [e-k+1, e]: bound k*d from the side that decides the sign.
            e, k = atom[1], atom[2]
            low = _add(_scale(rest, k), _scale(_add(e, 1 - k) if c > 0 else e, c))
            high = _add(_scale(rest, k), _scale(e if c > 0 else _add(e, 1 - k), c))
            if _ge0(low, depth - 1) is True:
                return True
            if _ge0(high, depth - 1) is False:
                return False
            continue
        # max/min is one of its arguments: d is the max or the min of the two substitutions.
        d1, d2 = (_add(rest, _scale(x, c)) for x in atom[1:])
        r1, r2 = _ge0(d1, depth - 1), _ge0(d2, depth - 1)
        if (atom[0] == "max") == (c > 0):
            return True if True in (r1, r2) else False if r1 is False and r2 is False else None
        return True if r1 is True and r2 is True else False if False in (r1, r2) else None
    return None


# --- helpers over int | DimExpr ---------------------------------------------------------

def eval_dim(d, env: dict, default=None):
    """Evaluate a dim with symbols bound (values may be ints or jax symbolic dims)."""
    if isinstance(d, DimExpr):
        return d.evaluate(env, default)
    if isinstance(d, str):
        return eval_dim(parse_dim(d), env, default)
    return _as_int(d)


def dim_symbols(d) -> set:
    """The symbol names a dim mentions."""
    if isinstance(d, str):
        d = parse_dim(d)
    return set(d.symbols) if isinstance(d, DimExpr) else set()


def from_jax(d) -> Dim:
    """A jax dimension (an int or a ``jax.export`` symbolic dim) as a dim in normal form."""
    if isinstance(d, (int, DimExpr)) and not isinstance(d, bool):
        return d
    terms = getattr(d, "_sorted_terms", None)
    if terms is None:
        import numpy as np
        if isinstance(d, np.integer):
            return int(d)
        raise DimTypeError(f"not a dimension: {d!r}")
    total: Dim = 0
    for term, coef in terms:
        val: Dim = coef
        for factor, exp in term._factors:
            if factor.var is not None:
                f = DimExpr.symbol(factor.var)
            else:
                a, b = (from_jax(o) for o in factor.operands)
                f = {"floordiv": lambda: floordiv(a, b), "mod": lambda: mod(a, b),
                     "max": lambda: dim_max(a, b), "min": lambda: dim_min(a, b)}[factor.operation]()
            for _ in range(exp):
                val = _mul(val, f)
        total = _add(total, val)
    return total


def is_static_dim(d) -> bool:
    """True for a plain int dim."""
    return isinstance(d, int) and not isinstance(d, bool)


# The text form lives in dimtext.py; imported last, as it builds dims with the arithmetic above.
from .dimtext import format_terms, parse_dim  # noqa: E402,F401
