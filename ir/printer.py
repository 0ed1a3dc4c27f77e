"""The IR text form: compact, typed, one node a line (see parser.py for the way back)."""
from __future__ import annotations

import math
import re

import numpy as np

from .graph import Graph, Node, Value
from .types import TensorType

_BARE = re.compile(r"^[A-Za-z0-9_./\-]+$")


def fmt_name(name: str) -> str:
    """A value or param name, quoted when it holds characters the parser cannot take bare."""
    if _BARE.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, tuple):
        inner = ", ".join(fmt_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise TypeError(f"cannot print attribute value {v!r}")


def fmt_attrs(attrs) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={fmt_attr(v)}" for k, v in attrs.items()) + "}"


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
                              f"  # {param_summary(arr)}")
        for r in g.requires:  # conditions on the symbols, each with the node that placed it
            why = f": {r.reason}" if r.reason else ""
            note = f"  # {fmt_name(r.origin)}{why}" if r.origin or r.reason else ""
            self.lines.append(f"{indent}  requires {r.condition()}{note}")
        self.body(g, indent + "  ")
        self.lines.append(f"{indent}}}")

    def body(self, g: Graph, indent: str) -> None:
        for n in g.nodes:
            self.node(n, indent)
        self.lines.append(f"{indent}return {', '.join(self.ref(v) for v in g.outputs)}")

    def node(self, n: Node, indent: str) -> None:
        outs = ", ".join(self.typed(v) for v in n.outputs)
        ins = ", ".join(self.ref(v) for v in n.inputs)
        head = f"{indent}{outs} = {n.op}({ins}){fmt_attrs(n.attrs)}"
        loc = f"  # {n.loc}" if n.loc else ""
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
