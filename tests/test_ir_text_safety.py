"""IR text is injection-proof and exact: any name, location or string prints and parses back.

Issue 15: names and locations used to be printed unescaped, so a crafted location added a
node to a dump that ``ir.load`` then ran, and names holding ``\\r``, ``\\v``, ``\\x85`` or
``\\u2028`` were written but could not be read back.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorsmith as ts
from tensorsmith import ir
from tensorsmith.ir import Graph, Node, Value, parse
from tensorsmith.ir.types import TensorType

F2 = TensorType((2,), "f32")
LINE_BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
TRICKY = LINE_BREAKS + ['"', "\\", "#", "%", "@", "{", "}", "(", ")", "=", ",", ":", " ", "\t",
                        "\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "\U0010ffff", "é", "\\n",
                        '\\"', "\\u2028", "#\"", " # "]


def _graph(x="x", w="w", y="y", z="z", gname="main", loc="", loc2="", tag="t", key="tag",
           op="add") -> Graph:
    xv, wv = Value(x, F2), Value(w, F2)
    yv, zv = Value(y, F2), Value(z, F2)
    n1 = Node(op, [xv, wv], [yv], {key: tag}, loc=loc)
    n2 = Node("relu", [yv], [zv], loc=loc2)
    return Graph(gname, [xv], [zv], [n1, n2], {w: np.array([1.0, -3.0], np.float32)})


def _summary(g: Graph):
    return (g.name, [v.name for v in g.inputs], list(g.params), [v.name for v in g.outputs],
            [(n.op, [v.name for v in n.inputs], [v.name for v in n.outputs], dict(n.attrs), n.loc)
             for n in g.nodes])


def test_crafted_location_does_not_add_a_node(tmp_path):
    evil = "model.py:3\n  %pwn: f32[2] = neg(%y)\n  return %pwn\n}\ngraph @x() {"
    g = _graph(loc=evil, op="add", key="", tag="")
    g = Graph(g.name, g.inputs, g.outputs,
              [g.nodes[0].replace(attrs={}), g.nodes[1]], g.params)
    ir.save(g, tmp_path / "m.tsir")
    back = ir.load(tmp_path / "m.tsir")
    assert [n.op for n in back.nodes] == ["add", "relu"]
    assert back.nodes[0].loc == evil
    x = np.array([1.0, 2.0], np.float32)
    np.testing.assert_array_equal(np.asarray(ts.compile(back)(x)[0]), np.maximum(x + [1, -3], 0))


def test_crafted_name_and_string_attr_do_not_add_a_node():
    evil = 'y: f32[2] = neg(%x)\n  %q'
    text = _graph(y=evil, tag='"}\n  %k: f32[2] = neg(%x)  # ').to_text()
    assert len(text.strip("\n").split("\n")) == 6  # graph, param, 2 nodes, return, }
    back = parse(text)
    assert [n.op for n in back.nodes] == ["add", "relu"]
    assert back.nodes[0].outputs[0].name == evil


@pytest.mark.parametrize("sep", LINE_BREAKS)
def test_line_separators_round_trip_through_files(tmp_path, sep):
    g = _graph(x=f"in{sep}put", w=f"w{sep}", y=f"{sep}y", gname=f"g{sep}", loc=f"a{sep}b",
               tag=sep, op="add", key="tag")
    g = Graph(g.name, g.inputs, g.outputs, [g.nodes[0].replace(attrs={}), g.nodes[1]], g.params)
    ir.save(g, tmp_path / "m.tsir")
    back = ir.load(tmp_path / "m.tsir")
    assert _summary(back) == _summary(g)
    x = np.array([4.0, 1.0], np.float32)
    np.testing.assert_array_equal(np.asarray(ts.compile(back)(x)[0]), np.maximum(x + [1, -3], 0))


def test_plain_names_and_locations_stay_readable():
    text = _graph(loc="model.py:12 (fn)", tag="same").to_text()
    assert "%y: f32[2] = add(%x, @w) {tag=\"same\"}  # model.py:12 (fn)" in text


_text = st.lists(st.one_of(st.characters(exclude_categories=()), st.sampled_from(TRICKY)),
                max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(names=st.lists(_text, min_size=4, max_size=4, unique=True), gname=_text, loc=_text,
       loc2=_text, tag=_text, key=_text, op=_text)
def test_any_text_round_trips(names, gname, loc, loc2, tag, key, op):
    g = _graph(*names, gname=gname, loc=loc, loc2=loc2, tag=tag, key=key, op=op)
    text = g.to_text()
    text.encode("utf-8")  # writable as a file, lone surrogates included
    assert len(text.strip("\n").split("\n")) == 6
    back = parse(text)
    assert _summary(back) == _summary(g)
    assert back.to_text() == text


def test_export_with_line_separators_in_names_loads_back(tmp_path):
    g = _graph(x="in\u2028put", w="w\x85\r", y="y\v", gname="g\u2029", loc="a\nb")
    g = Graph(g.name, g.inputs, g.outputs, [g.nodes[0].replace(attrs={}), g.nodes[1]], g.params)
    loaded = ts.load(ts.compile(g).export(tmp_path / "m.tsx"))
    assert _summary(loaded.graph) == _summary(g)
    x = np.array([4.0, 1.0], np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)[0]), np.maximum(x + [1, -3], 0))
