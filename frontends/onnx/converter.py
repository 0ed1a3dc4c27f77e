"""Walk an ONNX graph and emit IR: params, inputs with symbolic dims, per-node opsets,
folding of known values, functions as composites, and one report of unsupported nodes."""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, ValueInfoProto, numpy_helper

from ...ir import Graph, Namer, Node, TensorType, Value, dtype_name, make_node, verify
from ...ir.registry import OpTypeError
from ...errors import TensorsmithError
from ...ir.verify import VerificationError
from . import folding
from .context import NodeContext
from .cleanup import eliminate_dead_code
from .dtypes import onnx_dtype, value_info_type
from .errors import (NeedsInputValuesError, NeedsKnownValue, OnnxImportError, Unsupported,
                     UnsupportedNode, UnsupportedNodesError)
from .functions import bind_attributes, schema_defaults, schema_function
from .loader import all_node_lists
from .registry import domains as converter_domains
from .registry import lookup, norm_domain

STANDARD_DOMAINS = {"", "ai.onnx.ml", "ai.onnx.preview.training"}


class _Reported(Exception):
    """A nested body had unsupported nodes; they are already in the report."""


class Importer:
    """State shared by every scope of one import: names, params, known values, the report."""

    def __init__(self, model: ModelProto, label: str, *, input_shapes=None, input_values=None):
        self.model, self.label = model, label
        self.opsets = {norm_domain(o.domain): int(o.version) for o in model.opset_import}
        self.functions = {(norm_domain(f.domain), f.name): f for f in model.functions}
        self.input_shapes = dict(input_shapes or {})
        self.input_values = {k: np.asarray(v) for k, v in (input_values or {}).items()}
        self.namer = Namer(())
        self.params: dict[str, np.ndarray] = {}
        self.known: dict[str, np.ndarray] = {}        # IR value name -> value
        self.deps: dict[str, frozenset[str]] = {}     # IR value name -> graph inputs it reads
        self.problems: list[UnsupportedNode] = []
        self.needed: set[str] = set()
        self.need_nodes: list[UnsupportedNode] = []
        self.requires: list = []                      # Requirements placed by converters

    # --- checks before conversion ---------------------------------------------------------
    def check_domains(self) -> None:
        """Refuse nodes of domains no one knows (not ONNX, no converter, no local function)."""
        known = STANDARD_DOMAINS | converter_domains() | {d for d, _ in self.functions} | _schema_domains()
        bad = []
        for g_nodes in all_node_lists(self.model, self.label):
            for n in g_nodes:
                d = norm_domain(n.domain)
                if d not in known:
                    bad.append(f"{n.name or '(unnamed)'} ({n.op_type}, domain {n.domain!r})")
        if bad:
            raise OnnxImportError(f"{self.label}: unknown operator domain used by "
                                  f"{len(bad)} node(s): {'; '.join(bad[:20])}. Known domains: "
                                  f"{', '.join(sorted(repr(d or 'ai.onnx') for d in known))}")

    # --- the main graph -------------------------------------------------------------------
    def run(self, name: str | None) -> Graph:
        g = self.model.graph
        self.check_domains()
        scope = Scope(self, self.opsets)
        init = {t.name: t for t in g.initializer}
        # ONNX IR >= 4: an initializer that is also a graph input is only its default value;
        # the input wins. Before IR 4 every initializer was listed as an input too.
        overridable = self.model.ir_version >= 4
        inputs = []
        unknown = set(self.input_values) | set(self.input_shapes)
        for vi in g.input:
            if vi.name in init and not overridable:
                continue
            unknown.discard(vi.name)
            inputs.append(scope.add_graph_input(vi))
        if unknown:
            raise OnnxImportError(f"{self.label}: input_values/input_shapes name "
                                  f"{', '.join(sorted(map(repr, unknown)))}, which are not graph "
                                  f"inputs (inputs: {', '.join(v.name for v in inputs)})")
        for t in g.initializer:
            if t.name not in scope.values:
                scope.add_initializer(t)
        for sp in g.sparse_initializer:
            if sp.values.name not in scope.values:
                scope.add_sparse_initializer(sp)
        for v in g.value_info:
            scope.value_info[v.name] = v
        from ...ir.dims import assuming
        with assuming(self.requires):  # what converters required holds for the rest
            scope.convert_nodes(g.node)
        self.raise_problems()
        try:
            outputs = [scope.output_value(o.name) for o in g.output]
        except _Reported:
            self.raise_problems()
            raise OnnxImportError(f"{self.label}: a graph output depends on a node that failed "
                                  "without a report (frontend bug)") from None
        self.raise_problems()
        graph = Graph(_graph_name(name or g.name), inputs, outputs, scope.nodes, self.params,
                      tuple(self.requires))
        graph = eliminate_dead_code(graph)
        try:
            verify(graph)
        except VerificationError as e:  # a converter bug, not the user's: say so
            raise OnnxImportError(f"{self.label}: the imported IR is invalid (frontend bug): {e}") from e
        return graph

    def raise_problems(self) -> None:
        # Needed values first: binding them may well resolve the other problems.
        if self.needed:
            raise NeedsInputValuesError(self.label, tuple(sorted(self.needed)), self.need_nodes,
                                        self.problems)
        if self.problems:
            raise UnsupportedNodesError(self.label, self.problems)


@functools.lru_cache(maxsize=1)
def _schema_domains() -> frozenset[str]:
    """Domains onnx itself defines ops for."""
    return frozenset(norm_domain(s.domain) for s in onnx.defs.get_all_schemas())


def _graph_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "main"


class Scope:
    """One graph body being converted: the main graph, a function body or a sub-graph."""

    def __init__(self, imp: Importer, opsets: dict[str, int], parent: "Scope | None" = None,
                 prefix: str = ""):
        self.imp, self.opsets, self.parent = imp, opsets, parent
        self.prefix = prefix  # "outer_node/" for nodes of a body, so reports say where they are
        self.namer = imp.namer
        self.values: dict[str, Value | None] = {}   # ONNX name -> IR value (None: absent)
        self.known: dict[str, np.ndarray] = {}      # ONNX name -> value not yet materialized
        self.poisoned: set[str] = set()             # outputs of nodes that failed
        self.value_info: dict[str, ValueInfoProto] = {}
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.captured: list[Value] = []             # outer values read by a sub-graph

    # --- values -----------------------------------------------------------------------------
    def add_graph_input(self, vi: ValueInfoProto) -> Value:
        imp = self.imp
        bound = imp.input_values.get(vi.name)
        t = value_info_type(vi, imp.input_shapes.get(vi.name), bound, imp.label)
        if bound is not None:
            if dtype_name(bound.dtype) != t.dtype:
                raise OnnxImportError(f"{imp.label}: input_values[{vi.name!r}] has dtype "
                                      f"{bound.dtype}, but the input is {t}")
            t = TensorType(bound.shape, t.dtype)
        name = vi.name
        if name in self.namer.taken:
            raise OnnxImportError(f"{imp.label}: graph input {name!r} is declared twice")
        self.namer.reserve(name)
        v = Value(name, t)
        self.values[name] = v
        if bound is not None:
            imp.known[name] = bound
        else:
            imp.deps[name] = frozenset({name})
        self.inputs.append(v)
        return v

    def add_initializer(self, t: onnx.TensorProto) -> None:
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise OnnxImportError(f"{self.imp.label}: initializer {t.name!r} cannot be read: {e}") from None
        if arr.dtype == object:
            raise OnnxImportError(f"{self.imp.label}: initializer {t.name!r} holds strings, "
                                  "which tensorsmith does not support")
        name = self.namer(t.name)
        self.imp.params[name] = arr
        self.imp.known[name] = arr
        self.values[t.name] = Value(name, TensorType.of(arr))

    def add_sparse_initializer(self, sp: onnx.SparseTensorProto) -> None:
        """A sparse initializer, as the dense param it stands for (size-checked first)."""
        try:
            arr = folding.sparse_to_dense(sp)
        except OnnxImportError as e:
            raise OnnxImportError(f"{self.imp.label}: {e}") from None
        name = self.namer(sp.values.name)
        self.imp.params[name] = arr
        self.imp.known[name] = arr
        self.values[sp.values.name] = Value(name, TensorType.of(arr))

    def literal(self, arr: np.ndarray, hint: str | None = None) -> Value:
        """Materialize a known array: a constant node for a plain scalar, else a param."""
        arr = np.asarray(arr)
        if arr.ndim == 0 and arr.dtype.kind in "biuf" and arr.dtype.itemsize <= 8 \
                and arr.dtype.name in _PLAIN_SCALARS:
            n = make_node("constant", (), self.namer, names=[hint] if hint else None,
                          value=arr.item(), dtype=dtype_name(arr.dtype))
            self.nodes.append(n)
            v = n.output
        else:
            name = self.namer(hint or "const")
            self.imp.params[name] = arr
            v = Value(name, TensorType.of(arr))
        self.imp.known[v.name] = arr
        return v

    def has(self, name: str) -> bool:
        if name in self.values or name in self.known or name in self.poisoned:
            return True
        return self.parent is not None and self.parent.has(name)

    def is_poisoned(self, name: str) -> bool:
        if name in self.poisoned:
            return True
        if name in self.values or name in self.known:
            return False
        return self.parent is not None and self.parent.is_poisoned(name)

    def known_value(self, name: str) -> np.ndarray | None:
        """The known value of ONNX tensor ``name`` (looking through outer scopes)."""
        if name in self.known:
            return self.known[name]
        if name in self.values:
            v = self.values[name]
            return None if v is None else self.imp.known.get(v.name)
        return self.parent.known_value(name) if self.parent is not None else None

    def value(self, name: str) -> Value | None:
        """The IR value of ONNX tensor ``name`` ('' is an absent optional input: None)."""
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if self.is_poisoned(name):  # its producer failed (and is reported): fail quietly
            raise _Reported()
        if name in self.known:
            v = self.literal(self.known.pop(name), _hint(name, self.namer))
            self.values[name] = v
            return v
        if self.parent is not None and self.parent.has(name):
            arr = self.parent.known_value(name)
            if arr is not None:
                v = self.literal(arr, _hint(name, self.namer))
            else:
                outer = self.parent.value(name)
                if outer.name in self.imp.params:
                    return outer  # params are visible in every region
                v = Value(self.namer(outer.name), outer.type)
                self.imp.deps[v.name] = self.imp.deps.get(outer.name, frozenset())
                self.captured.append(outer)
                self.inputs.append(v)
            self.values[name] = v
            return v
        raise Unsupported(f"input {name!r} is not defined before this node")

    def known_ir(self, v: Value) -> np.ndarray | None:
        return self.imp.known.get(v.name)

    def input_deps(self, v: Value) -> frozenset[str]:
        return self.imp.deps.get(v.name, frozenset())

    def emit(self, node: Node) -> None:
        self.nodes.append(node)

    def output_value(self, name: str) -> Value:
        if self.is_poisoned(name):
            raise _Reported()
        if not self.has(name):
            raise OnnxImportError(f"{self.imp.label}: graph output {name!r} is not produced by "
                                  "any node, input or initializer")
        return self.value(name)

    # --- nodes ------------------------------------------------------------------------------
    def opset_for(self, domain: str) -> int:
        d = norm_domain(domain)
        if d in self.opsets:
            return self.opsets[d]
        if d == "":
            raise OnnxImportError(f"{self.imp.label}: the model imports no opset for the default "
                                  "ONNX domain")
        return 1  # a local function's own domain need not be imported

    def convert_nodes(self, nodes: Sequence[NodeProto]) -> None:
        for i, node in enumerate(nodes):
            self.convert_node(node, i)

    def node_label(self, node: NodeProto, index: int | None = None) -> str:
        return self.prefix + (node.name or f"{node.op_type}_{index if index is not None else '?'}")

    def convert_node(self, node: NodeProto, index: int) -> None:
        imp = self.imp
        domain = norm_domain(node.domain)
        opset = self.opset_for(domain)
        label = self.node_label(node, index)

        def record(reason: str):
            imp.problems.append(UnsupportedNode(label, node.op_type, domain, opset, reason))
            self.poison(node)

        if any(n and self.is_poisoned(n) for n in node.input):
            # An input failed already: report this node only if it could never convert.
            if not self.convertible(node, domain, opset):
                record("no converter for this op type at this opset")
            else:
                self.poison(node)
            return
        try:
            self.dispatch(node, domain, opset, label)
        except Unsupported as e:
            record(str(e) or "not supported")
        except NeedsKnownValue as e:
            imp.needed.update(e.inputs)
            imp.need_nodes.append(UnsupportedNode(label, node.op_type, domain, opset,
                                                  f"{', '.join(e.inputs)}: {e.reason}", e.inputs))
            self.poison(node)
        except _Reported:
            self.poison(node)
        except TensorsmithError:
            raise
        except Exception as e:  # noqa: BLE001  (the last guard: see _converter_crash)
            raise _converter_crash(imp.label, label, node, opset, e) from e

    def convertible(self, node: NodeProto, domain: str, opset: int) -> bool:
        return ((domain, node.op_type) in self.imp.functions
                or lookup(node.op_type, domain, opset) is not None
                or _has_schema_function(node, opset))

    def poison(self, node: NodeProto) -> None:
        self.poisoned.update(o for o in node.output if o)

    def dispatch(self, node: NodeProto, domain: str, opset: int, label: str) -> None:
        # 1. fold: Constant, Shape/Size of static shapes, any node whose inputs are known
        if domain == "" and node.op_type == "Constant":
            self.bind_known(node, [folding.fold_constant(node)])
            return
        if domain == "" and node.op_type in ("Shape", "Size") and node.input:
            x = self.value(node.input[0])
            val = folding.fold_shape(node, opset, x.type)
            if val is not None:
                self.bind_known(node, [val])
                return
        known = [self.known_value(n) if n else None for n in node.input]
        if folding.foldable(node, domain, known):
            outs = folding.evaluate(node, opset, known)
            if outs is not None:
                self.bind_known(node, outs)
                return
        inputs = [self.value(n) for n in node.input]
        start = len(self.nodes)
        # 2. a model-local function, 3. a converter, 4. the op's ONNX function body
        fn = self.imp.functions.get((domain, node.op_type))
        if fn is not None:
            outs = self.call_function(fn, node, inputs, label, f"{domain or 'onnx'}.{node.op_type}")
        elif (found := lookup(node.op_type, domain, opset)) is not None:
            since, conv = found
            ctx = NodeContext(self, node, opset, since, inputs, label)
            outs = conv(ctx, *inputs)
        else:
            body = schema_function(node, opset, [self.type_proto(v) for v in inputs])
            if body is None:
                raise Unsupported("no converter for this op type at this opset")
            outs = self.call_function(body, node, inputs, label, f"onnx.{node.op_type}",
                                      schema_defaults(node, opset))
        self.bind_outputs(node, outs, start, inputs)

    def bind_known(self, node: NodeProto, arrays: Sequence[np.ndarray]) -> None:
        for name, arr in zip(node.output, arrays):
            if name:
                self.known[name] = np.asarray(arr)
                self.values.pop(name, None)

    def bind_outputs(self, node: NodeProto, outs, start: int, inputs) -> None:
        if isinstance(outs, Value) or outs is None:
            outs = [outs]
        outs = list(outs)
        deps = frozenset().union(*(self.imp.deps.get(v.name, frozenset()) for v in inputs if v is not None))
        renames: dict[str, str] = {}
        for i, name in enumerate(node.output):
            if not name:
                continue
            v = outs[i] if i < len(outs) else None
            if v is None:
                raise Unsupported(f"output {i} ({name!r}) is not produced by the converter")
            if v.name in renames:
                v = Value(renames[v.name], v.type)
            elif name not in self.namer.taken and self._emitted_here(v, start):
                renames[v.name] = name
                self.namer.reserve(name)
                v = Value(name, v.type)
            self.values[name] = v
            self.known.pop(name, None)
            if v.name not in self.imp.known:
                self.imp.deps[v.name] = deps | self.imp.deps.get(v.name, frozenset())
        if renames:
            self._rename(start, renames)

    def _emitted_here(self, v: Value, start: int) -> bool:
        return any(o.name == v.name for n in self.nodes[start:] for o in n.outputs)

    def _rename(self, start: int, renames: dict[str, str]) -> None:
        def fix(v: Value) -> Value:
            return Value(renames[v.name], v.type) if v.name in renames else v
        for i in range(start, len(self.nodes)):
            n = self.nodes[i]
            self.nodes[i] = n.replace(inputs=tuple(fix(v) for v in n.inputs),
                                      outputs=tuple(fix(v) for v in n.outputs))
        for old, new in renames.items():
            if old in self.imp.known:
                self.imp.known[new] = self.imp.known.pop(old)
            if old in self.imp.deps:
                self.imp.deps[new] = self.imp.deps.pop(old)

    @staticmethod
    def type_proto(v: Value | None):
        if v is None:
            return None
        try:
            return onnx.helper.make_tensor_type_proto(onnx_dtype(v.dtype), list(v.shape))
        except KeyError:
            return None

    # --- functions and sub-graphs ---------------------------------------------------------
    def call_function(self, fn: onnx.FunctionProto, node: NodeProto, inputs: list[Value | None],
                      label: str, composite_name: str, defaults=None):
        """Convert a function call into a composite (or known values if it folds entirely)."""
        opsets = {norm_domain(o.domain): int(o.version) for o in fn.opset_import} or dict(self.opsets)
        body = Scope(self.imp, {**self.opsets, **opsets}, prefix=f"{label}/")
        actual = []
        for i, formal in enumerate(fn.input):
            v = inputs[i] if i < len(inputs) else None
            if v is None:
                body.values[formal] = None
                continue
            arr = self.imp.known.get(v.name)
            if arr is not None:
                body.known[formal] = arr
                continue
            inner = Value(self.namer(formal), v.type)
            self.imp.deps[inner.name] = self.imp.deps.get(v.name, frozenset())
            body.values[formal] = inner
            body.inputs.append(inner)
            actual.append(v)
        n_problems, n_needs = len(self.imp.problems), len(self.imp.need_nodes)
        body.convert_nodes(bind_attributes(fn.node, node, fn, defaults))
        # Failures inside the body are this node's failure: report it, saying which inner nodes.
        inner, self.imp.problems[n_problems:] = self.imp.problems[n_problems:], []
        needs, self.imp.need_nodes[n_needs:] = self.imp.need_nodes[n_needs:], []
        if inner:
            raise Unsupported(f"its {composite_name} function body has unsupported nodes: "
                              + "; ".join(f"{p.name} ({p.op_type}): {p.reason}" for p in inner))
        if needs:
            raise NeedsKnownValue({i for p in needs for i in p.needs},
                                  "; ".join(f"{p.name} ({p.op_type}): {p.reason}" for p in needs))
        # Only the outputs the call asks for (a context-dependent body may omit the others).
        wanted = [o for i, o in enumerate(fn.output) if i < len(node.output) and node.output[i]]
        for o in wanted:
            if not body.has(o):
                raise Unsupported(f"its {composite_name} function body does not compute output {o!r}")
        known = [body.known_value(o) for o in wanted]
        if all(k is not None for k in known):
            vals = iter([self.literal(k) for k in known])
        else:
            region = Graph(_graph_name(composite_name), body.inputs,
                           [body.output_value(o) for o in wanted], body.nodes, {})
            try:
                n = make_node("composite", actual, self.namer, regions=[region], loc=label,
                              name=composite_name)
            except OpTypeError as e:
                raise Unsupported(f"function body does not type-check: {e}") from None
            self.nodes.append(n)
            vals = iter(n.outputs)
        return [next(vals) if i < len(node.output) and node.output[i] else None
                for i in range(len(fn.output))]

    def convert_subgraph(self, graph: GraphProto, input_types: list[TensorType], name: str,
                         loc: str) -> tuple[Graph, list[Value]]:
        """A graph attribute as a region; outer values it reads become extra region inputs."""
        sub = Scope(self.imp, self.opsets, parent=self, prefix=f"{loc}/")
        if len(input_types) != len(graph.input):
            raise Unsupported(f"sub-graph {graph.name!r} declares {len(graph.input)} inputs, "
                              f"the op passes {len(input_types)}")
        for vi, t in zip(graph.input, input_types):
            v = Value(self.namer(vi.name), t)
            sub.values[vi.name] = v
            sub.inputs.append(v)
        for t in graph.initializer:
            sub.add_initializer(t)
        n_before = len(self.imp.problems) + len(self.imp.need_nodes)
        sub.convert_nodes(graph.node)
        if len(self.imp.problems) + len(self.imp.need_nodes) > n_before:
            raise _Reported()
        outs = [sub.value(o.name) for o in graph.output]
        return Graph(_graph_name(name), sub.inputs, outs, sub.nodes, {}), list(sub.captured)


_PLAIN_SCALARS = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "float16", "float32", "float64"}


def _hint(name: str, namer: Namer) -> str | None:
    return name if name not in namer.taken else None


def _converter_crash(model: str, label: str, node: NodeProto, opset: int,
                     e: Exception) -> OnnxImportError:
    """A converter or the reference evaluator raised a raw exception on this node's input.

    Validation refuses invalid models before conversion; what still reaches here is an input
    no converter foresaw, so the user gets the node and the cause instead of a traceback.
    """
    kind = "nested too deeply" if isinstance(e, RecursionError) else type(e).__name__
    return OnnxImportError(f"{model}: node {label} ({node.op_type}, opset {opset}) cannot be "
                           f"converted: {kind}: {e}")


def _has_schema_function(node: NodeProto, opset: int) -> bool:
    try:
        s = onnx.defs.get_schema(node.op_type, opset, norm_domain(node.domain))
    except Exception:
        return False
    return bool(s.has_function or s.has_context_dependent_function)
