"""Parse the IR text form back into a Graph (the inverse of printer.py); no eval."""
from __future__ import annotations

import re

import numpy as np

from .annotations import Annotation
from .graph import Attrs, Graph, Node, Requirement, Value, parse_requirement
from .types import TensorType, numpy_dtype
from ..errors import LoadError


class ParseError(LoadError, ValueError):
    """The text is not valid IR; the message names the line and what was expected."""


class AbstractParam(np.ndarray):
    """A param declared in text whose weights were not loaded: shape and dtype only."""

    abstract = True
    note: str = "not loaded"


def _abstract(t: TensorType, note: str) -> AbstractParam:
    a = np.broadcast_to(np.zeros((), numpy_dtype(t.dtype)),
                        tuple(d if isinstance(d, int) else 1 for d in t.shape)).view(AbstractParam)
    a.note = note
    return a


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NAME = r'(?:[A-Za-z0-9_./\-]+|"(?:[^"\\]|\\.)*")'
_NUM = re.compile(r"-?(?:inf|nan|\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+|\d+)(?![A-Za-z0-9_])")
_TYPE = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")


class _Line:
    """A cursor over one line of text."""

    def __init__(self, text: str, lineno: int):
        self.s, self.pos, self.lineno = text, 0, lineno

    def error(self, what: str) -> ParseError:
        return ParseError(f"line {self.lineno}: expected {what} at column {self.pos + 1}: "
                          f"{self.s.strip()!r}")

    def ws(self) -> None:
        while self.pos < len(self.s) and self.s[self.pos] in " \t":
            self.pos += 1

    def peek(self, tok: str) -> bool:
        self.ws()
        return self.s.startswith(tok, self.pos)

    def eat(self, tok: str) -> bool:
        if self.peek(tok):
            self.pos += len(tok)
            return True
        return False

    def expect(self, tok: str) -> None:
        if not self.eat(tok):
            raise self.error(repr(tok))

    def regex(self, pat, what: str):
        self.ws()
        m = (pat if isinstance(pat, re.Pattern) else re.compile(pat)).match(self.s, self.pos)
        if not m:
            raise self.error(what)
        self.pos = m.end()
        return m

    def name(self) -> str:
        tok = self.regex(_NAME, "a name").group(0)
        return unquote(tok, self) if tok.startswith('"') else tok

    def ident(self) -> str:
        """An op name or attribute key: an identifier, or quoted (printer.fmt_ident)."""
        if self.peek('"'):
            return unquote(self.regex(_QUOTED, "a string").group(0), self)
        return self.regex(r"[A-Za-z_][A-Za-z0-9_.]*", "an identifier").group(0)

    def type(self) -> TensorType:
        m = self.regex(_TYPE, "a type like f32[N,8]")
        dims = split_dims(m.group(2)) if m.group(2).strip() else []
        try:
            return TensorType(tuple(int(d) if d.isdigit() else d for d in dims), m.group(1))
        except (ValueError, TypeError) as e:
            raise ParseError(f"line {self.lineno}: {e}") from None

    def comment(self) -> str | None:
        self.ws()
        if self.pos < len(self.s) and self.s[self.pos] == "#":
            text = self.s[self.pos + 1:].strip(" \t")
            self.pos = len(self.s)
            # printer.fmt_comment quotes a comment that needs it; a hand-written one is raw
            return unquote(text, self) if _QUOTED.fullmatch(text) else text
        return None

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= len(self.s)

    def attr_value(self):
        self.ws()
        if self.eat("("):
            items = []
            while not self.eat(")"):
                items.append(self.attr_value())
                if not self.eat(","):
                    self.expect(")")
                    break
            return tuple(items)
        if self.peek('"'):
            return unquote(self.regex(_QUOTED, "a string").group(0), self)
        for word, val in (("true", True), ("false", False), ("none", None)):
            if re.match(word + r"(?![A-Za-z0-9_])", self.s[self.pos:]):
                self.pos += len(word)
                return val
        tok = self.regex(_NUM, "an attribute value").group(0)
        if tok.lstrip("-").isdigit():
            return int(tok)
        return float(tok)


def split_dims(text: str) -> list[str]:
    """The dims of a type's bracket text, split at commas outside parentheses (max(a,b))."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur.strip())
    return out


_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r"}


def unquote(tok: str, where: "_Line | None" = None) -> str:
    """The text of a string literal written by printer.quote (the exact inverse)."""
    def one(m):
        hexa = m.group(1) or m.group(2) or m.group(3)
        if hexa is None:
            return _SIMPLE.get(m.group(4), m.group(4))
        code = int(hexa, 16)
        if code > 0x10FFFF:
            raise (where.error("a code point <= U+10FFFF") if where else
                   ParseError(f"escape \\U{hexa} is not a Unicode code point"))
        return chr(code)
    return _ESCAPE.sub(one, tok[1:-1])


class _Parser:
    def __init__(self, text: str, params: dict | None):
        # Only "\n" ends a line (and a CRLF's "\r"): the printer escapes every other line
        # separator, and splitlines() would cut a hand-written name at U+2028 or \x85.
        raw = text.split("\n")
        raw = [l[:-1] if l.endswith("\r") else l for l in raw]
        self.lines = [(i + 1, l) for i, l in enumerate(raw) if l.strip(" \t")]
        self.i = 0
        self.arrays = params
        self.annotation_arrays: dict | None = None

    def line(self) -> _Line:
        if self.i >= len(self.lines):
            raise ParseError("unexpected end of text")
        no, text = self.lines[self.i]
        return _Line(text, no)

    def graph(self) -> Graph:
        ln = self.line()
        ln.expect("graph")
        ln.expect("@")
        name = ln.name()
        env: dict[str, Value] = {}
        inputs = self.typed_list(ln, env, ")")
        ln.expect("{")
        self.i += 1
        params: dict[str, np.ndarray] = {}
        while self.line().peek("param "):
            ln = self.line()
            ln.expect("param")
            ln.expect("@")
            pname = ln.name()
            ln.expect(":")
            t = ln.type()
            note = ln.comment() or "not loaded"
            if self.arrays is not None:
                if pname not in self.arrays:
                    raise ParseError(f"line {ln.lineno}: param @{pname} has no array in the weights")
                arr = self.arrays[pname]
                if TensorType.of(arr) != t:
                    raise ParseError(f"line {ln.lineno}: param @{pname} is declared {t} but its "
                                     f"array is {TensorType.of(arr)}")
                params[pname] = arr
            else:
                params[pname] = _abstract(t, note)
            env[pname] = Value(pname, t)
            self.i += 1
        requires = []
        while self.line().peek("requires "):
            requires.append(self.requirement(self.line()))
            self.i += 1
        pending = []
        while self.line().peek("annotate "):
            pending.append(self.annotate(self.line()))
            self.i += 1
        nodes, outputs = self.body(env)
        self.line().expect("}")
        self.i += 1
        known = set(env) | {v.name for v in inputs}
        annotations = []
        for lineno, target, kind, attrs, t, note in pending:
            if target not in known:
                raise ParseError(f"line {lineno}: annotation {kind} names {target!r}, which is "
                                 "no param or value of the graph")
            annotations.append(Annotation(target, kind, attrs, self.payload(lineno, target,
                                                                            kind, t, note)))
        return Graph(name, inputs, outputs, nodes, params, tuple(requires), tuple(annotations))

    def annotate(self, ln: _Line):
        """``annotate @target kind {k=v}: type  # note`` (the printer's form)."""
        ln.expect("annotate")
        if not (ln.eat("@") or ln.eat("%")):
            raise ln.error("a param or value reference (@name or %name)")
        target = ln.name()
        ln.ws()
        kind = ln.ident()
        attrs = self.attr_dict(ln)
        t, note = None, None
        if ln.eat(":"):
            t = ln.type()
            note = ln.comment()
        elif ln.comment():
            pass
        if not ln.at_end():
            raise ln.error("end of line")
        if not kind.isidentifier():
            raise ParseError(f"line {ln.lineno}: annotation kind {kind!r} is not an identifier")
        return ln.lineno, target, kind, attrs, t, note

    def payload(self, lineno: int, target: str, kind: str, t, note):
        if t is None:
            return None
        if self.annotation_arrays is None:
            return _abstract(t, note or "not loaded")
        arr = self.annotation_arrays.get((target, kind))
        if arr is None:
            raise ParseError(f"line {lineno}: annotation {kind} on {target!r} has no array in "
                             "the weights")
        if TensorType.of(arr) != t:
            raise ParseError(f"line {lineno}: annotation {kind} on {target!r} is declared {t} "
                             f"but its array is {TensorType.of(arr)}")
        return arr

    def attr_dict(self, ln: _Line) -> dict:
        """``{k=v, ...}`` (possibly empty ``{}``)."""
        attrs = {}
        ln.ws()
        if not ln.eat("{"):
            return attrs
        while not ln.eat("}"):
            key = ln.ident()
            ln.expect("=")
            attrs[key] = ln.attr_value()
            if not ln.eat(","):
                ln.expect("}")
                break
        return attrs

    def requirement(self, ln: _Line) -> Requirement:
        """``requires a <= b  # origin: reason`` (the printer's form)."""
        ln.expect("requires")
        cond, _, note = ln.s[ln.pos:].partition("#")
        try:
            expr = parse_requirement(cond.strip())
        except ValueError as e:
            raise ParseError(f"line {ln.lineno}: {e}") from None
        origin, reason = "", ""
        if note.strip():
            ln.pos += len(cond) + 1
            origin = ln.name()
            ln.ws()
            if ln.eat(":"):
                reason = ln.s[ln.pos:].strip(" \t")
                reason = unquote(reason, ln) if _QUOTED.fullmatch(reason) else reason
        return Requirement(expr, origin, reason)

    def typed_list(self, ln: _Line, env: dict, close: str) -> list[Value]:
        ln.expect("(")
        vals: list[Value] = []
        while not ln.eat(close):
            ln.expect("%")
            name = ln.name()
            ln.expect(":")
            v = Value(name, ln.type())
            env[name] = v
            vals.append(v)
            if not ln.eat(","):
                ln.expect(close)
                break
        return vals

    def ref(self, ln: _Line, env: dict) -> Value:
        if not (ln.eat("%") or ln.eat("@")):
            raise ln.error("a value reference (%name or @param)")
        name = ln.name()
        if name not in env:
            raise ParseError(f"line {ln.lineno}: use of undefined value {name!r}")
        return env[name]

    def body(self, env: dict) -> tuple[list[Node], list[Value]]:
        nodes: list[Node] = []
        while True:
            ln = self.line()
            if ln.eat("return"):
                outs = []
                if not ln.at_end():
                    outs.append(self.ref(ln, env))
                    while ln.eat(","):
                        outs.append(self.ref(ln, env))
                self.i += 1
                return nodes, outs
            nodes.append(self.node(ln, env))

    def node(self, ln: _Line, env: dict) -> Node:
        outs: list[Value] = []
        while True:
            ln.expect("%")
            name = ln.name()
            ln.expect(":")
            outs.append(Value(name, ln.type()))
            if not ln.eat(","):
                break
        ln.expect("=")
        op = ln.ident()
        ln.expect("(")
        ins: list[Value] = []
        while not ln.eat(")"):
            ins.append(self.ref(ln, env))
            if not ln.eat(","):
                ln.expect(")")
                break
        attrs = {}
        if ln.peek("{") and re.match(r'\{\s*(?:[A-Za-z_][A-Za-z0-9_.]*|"(?:[^"\\]|\\.)*")\s*=',
                                     ln.s[ln.pos:]):  # attributes, not a region's opening brace
            attrs = self.attr_dict(ln)
        regions: list[Graph] = []
        has_regions = ln.eat("{")
        loc = ln.comment() or ""
        if not ln.at_end():
            raise ln.error("end of line")
        self.i += 1
        if has_regions:
            while not self.line().peek("}"):
                rl = self.line()
                rl.expect("^")
                rname = rl.name()
                renv = {k: v for k, v in env.items() if k in self.param_names}
                rins = self.typed_list(rl, renv, ")")
                rl.expect(":")
                self.i += 1
                rnodes, routs = self.body(renv)
                regions.append(Graph(rname, rins, routs, rnodes, {}))
            self.i += 1
        for v in outs:
            env[v.name] = v
        return Node(op, ins, outs, Attrs(attrs), regions, loc)

    param_names: set = set()


def parse(text: str, params: dict | None = None, annotation_arrays: dict | None = None) -> Graph:
    """Parse IR text; ``params`` supplies weight arrays (else params are declared only).

    ``annotation_arrays`` maps ``(target, kind)`` to annotation payloads (else declared only).
    """
    p = _Parser(text, params)
    p.annotation_arrays = annotation_arrays
    # Collect param names first so regions may refer to the root graph's params.
    p.param_names = set(re.findall(r"^\s*param @(" + _NAME + r")", text, re.M))
    p.param_names = {unquote(n) if n.startswith('"') else n for n in p.param_names}
    try:
        g = p.graph()
    except RecursionError:  # "((((..." attribute values or regions nested thousands deep
        no = p.lines[min(p.i, len(p.lines) - 1)][0] if p.lines else 0
        raise ParseError(f"line {no}: nested too deeply") from None
    if p.i != len(p.lines):
        no, rest = p.lines[p.i]
        raise ParseError(f"line {no}: unexpected text after the graph: {rest.strip()!r}")
    return g
