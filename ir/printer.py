"""The IR text form: compact, typed, one node a line (see parser.py for the way back)."""
from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

from .graph import Graph, Node, Value
from .types import TensorType

_BARE = re.compile(r"[A-Za-z0-9_./\-]+")  # fullmatch: "$" would accept a trailing newline
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _needs_escape(c: str) -> bool:
    # Everything str.splitlines() splits on, controls, format chars (bidi overrides),
    # surrogates and unassigned code points: they would break the one-node-a-line form,
    # hide text from a reader, or fail to encode as UTF-8.
    return c in _SHORT_ESCAPES or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn",
                                                               "Zl", "Zp")


def _escape_char(c: str) -> str:
    if c in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def quote(text: str) -> str:
    """``text`` as a double-quoted string literal on one line (parser.unquote reverses it)."""
    return '"' + "".join(_escape_char(c) if _needs_escape(c) else c for c in text) + '"'


def fmt_name(name: str) -> str:
    """A value or param name: bare when the parser can take it bare, else quoted."""
    return name if _BARE.fullmatch(name) else quote(name)


def fmt_ident(word: str) -> str:
    """An op name or attribute key: bare when an identifier, else quoted."""
    return word if _IDENT.fullmatch(word) else quote(word)


def _plain_or_quoted(text: str) -> str:
    """Free text at the end of a line: as is when safe, else one quoted string."""
    plain = (text == text.strip() and not text.startswith('"')
             and not any(_needs_escape(c) for c in text if c not in '"\\'))
    return text if plain else quote(text)


def fmt_comment(text: str) -> str:
    """A trailing ``# ...`` comment (a node's location): as is when safe, else quoted."""
    if not text:
        return ""
    return "  # " + _plain_or_quoted(text)


def fmt_attr(v) -> str:
    """An attribute value as text: ints, floats (repr), true/false, none, "str", (tuples)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, tuple):
        inner = ", ".join(fmt_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise TypeError(f"cannot print attribute value {v!r}")


def fmt_attrs(attrs) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{fmt_ident(k)}={fmt_attr(v)}" for k, v in attrs.items()) + "}"


def param_summary(array) -> str:
    """One-line summary of a weight: element count, bytes, sparsity."""
    note = getattr(array, "note", None)
    if note is not None:  # declared but not loaded (parsed without weights)
        return note
    n = int(np.prod(array.shape)) if array.shape else 1
    try:
        zeros = n - int(np.count_nonzero(array))
    except TypeError:
        zeros = 0
    nbytes = TensorType.of(array).nbytes()
    return f"{n} elems, {_human_bytes(nbytes)}, {100.0 * zeros / max(n, 1):.1f}% zero"


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def fmt_annotation(a, on_param: bool) -> str:
    """``annotate @target kind {attrs}: type  # summary`` (the payload's type, if any)."""
    ref = ("@" if on_param else "%") + fmt_name(a.target)
    typ = f": {a.type}{fmt_comment(param_summary(a.array))}" if a.array is not None else ""
    return f"annotate {ref} {fmt_ident(a.kind)}{fmt_attrs(a.attrs) or ' {}'}{typ}"


class _Printer:
    def __init__(self, graph: Graph):
        self.params = graph.params
        self.lines: list[str] = []

    def ref(self, v: Value) -> str:
        return ("@" if v.name in self.params else "%") + fmt_name(v.name)

    def typed(self, v: Value) -> str:
        return f"%{fmt_name(v.name)}: {v.type}"

    def graph(self, g: Graph, indent: str) -> None:
        ins = ", ".join(self.typed(v) for v in g.inputs)
        self.lines.append(f"{indent}graph @{fmt_name(g.name)}({ins}) {{")
        for name, arr in g.params.items():
            self.lines.append(f"{indent}  param @{fmt_name(name)}: {TensorType.of(arr)}"
                              f"{fmt_comment(param_summary(arr))}")
        for r in g.requires:  # conditions on the symbols, each with the node that placed it
            why = f": {_plain_or_quoted(r.reason)}" if r.reason else ""
            note = f"  # {fmt_name(r.origin)}{why}" if r.origin or r.reason else ""
            self.lines.append(f"{indent}  requires {r.condition()}{note}")
        for a in g.annotations:
            self.lines.append(f"{indent}  {fmt_annotation(a, a.target in self.params)}")
        self.body(g, indent + "  ")
        self.lines.append(f"{indent}}}")

    def body(self, g: Graph, indent: str) -> None:
        for n in g.nodes:
            self.node(n, indent)
        self.lines.append(f"{indent}return {', '.join(self.ref(v) for v in g.outputs)}")

    def node(self, n: Node, indent: str) -> None:
        outs = ", ".join(self.typed(v) for v in n.outputs)
        ins = ", ".join(self.ref(v) for v in n.inputs)
        head = f"{indent}{outs} = {fmt_ident(n.op)}({ins}){fmt_attrs(n.attrs)}"
        loc = fmt_comment(n.loc)
        if not n.regions:
            self.lines.append(head + loc)
            return
        self.lines.append(head + " {" + loc)
        for r in n.regions:
            rin = ", ".join(self.typed(v) for v in r.inputs)
            self.lines.append(f"{indent}  ^{fmt_name(r.name)}({rin}):")
            self.body(r, indent + "    ")
        self.lines.append(f"{indent}}}")


def print_graph(g: Graph) -> str:
    """The text form of a graph, ending in a newline."""
    p = _Printer(g)
    p.graph(g, "")
    return "\n".join(p.lines) + "\n"
