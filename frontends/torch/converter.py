"""Walk a decomposed ``ExportedProgram`` and emit IR: params under their state_dict names,
inputs with symbolic dims, one converter per ATen op, and one report of unsupported ops."""
from __future__ import annotations

import operator
import os
import re

import numpy as np

from ...errors import TensorsmithError
from ...ir import Graph, Namer, Node, Requirement, TensorType, Value, dtype_name, make_node, verify
from ...ir.dims import DimExpr, assuming
from ...ir.verify import VerificationError
from .context import Missing, NodeContext
from .errors import TorchImportError, Unsupported, UnsupportedOp, UnsupportedOpsError
from .registry import lookup
from .types import ir_dtype, size_dim, sym_dim, tensor_type, to_numpy

# Ops that only check metadata or assert at run time: nothing to compute.
_NO_OPS = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
           "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg",
           "aten.sym_constrain_range.default"}
_LIBRARIES = ("torch", "transformers", "sentence_transformers", "timm", "torchvision")


class Importer:
    """State of one import: names, params, the IR nodes, FX node -> IR value, the report."""

    def __init__(self, program, label: str, sym_names: dict[str, str]):
        self.ep, self.label, self.sym_names = program, label, sym_names
        self.namer = Namer(())
        self.params: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.env: dict[str, object] = {}        # FX node name -> Value | dim | tuple | scalar
        self.poisoned: set[str] = set()
        self.problems: list[UnsupportedOp] = []
        self.inputs: list[Value] = []
        self.dim_sources: dict[str, tuple[Value, int]] = {}  # symbol -> (input, axis)
        self.dim_cache: dict[str, Value] = {}

    # --- values -------------------------------------------------------------------------------
    def literal(self, arr: np.ndarray) -> Value:
        arr = np.asarray(arr)
        if arr.ndim == 0 and arr.dtype.kind in "biuf" and arr.dtype.itemsize <= 8:
            n = make_node("constant", (), self.namer, value=arr.item(), dtype=dtype_name(arr.dtype))
            self.nodes.append(n)
            return n.output
        name = self.namer("const")
        self.params[name] = arr
        return Value(name, TensorType.of(arr))

    def dim_value(self, d, loc: str) -> Value:
        """A run-time i64 scalar holding the value of dim expression ``d``."""
        if isinstance(d, int):
            return self.literal(np.int64(d))
        key = str(d)
        if key in self.dim_cache:
            return self.dim_cache[key]
        total = None
        for mono, coef in d.terms:
            term = self.literal(np.int64(coef))
            for atom, power in mono:
                for _ in range(power):
                    term = self._emit("mul", [term, self._atom_value(atom, d, loc)], loc)
            total = term if total is None else self._emit("add", [total, term], loc)
        self.dim_cache[key] = total
        return total

    def sym_value(self, val, loc: str):
        """A symbolic scalar: a dim expression for a SymInt, else a run-time 0-d value."""
        import torch
        if isinstance(val, (bool, int, float)):
            return val
        if isinstance(val, torch.SymInt):
            try:
                return size_dim(val, self.sym_names)
            except Unsupported:
                pass
        if isinstance(val, torch.SymBool):
            raise Unsupported(f"symbolic bool {val} (a data-dependent condition)")
        return self._expr_value(val.node.expr, loc)

    def _expr_value(self, e, loc: str) -> Value:
        """IR computing sympy expression ``e`` of input sizes at run time (f32 for floats, as sizes are small)."""
        import sympy
        if e.is_Integer:
            return self.literal(np.int64(int(e)))
        if e.is_Number:
            return self.literal(np.float32(float(e)))
        if e.is_Symbol:
            return self.dim_value(sym_dim(e, self.sym_names), loc)
        kind = type(e).__name__
        args = [self._expr_value(a, loc) for a in e.args]
        if kind in ("ToFloat", "FloatTrueDiv", "IntTrueDiv") or any(a.dtype == "f32" for a in args):
            args = [a if a.dtype == "f32" else self._emit("convert", [a], loc, dtype="f32")
                    for a in args]
        if kind == "ToFloat":
            return args[0]
        ops = {sympy.Add: "add", sympy.Mul: "mul"}
        for cls, op in ops.items():
            if isinstance(e, cls):
                out = args[0]
                for a in args[1:]:
                    out = self._emit(op, [out, a], loc)
                return out
        if kind in ("FloorDiv", "FloatTrueDiv", "IntTrueDiv"):
            return self._emit("div", args, loc)
        raise Unsupported(f"symbolic value {e} ({kind}) cannot be computed from input sizes")

    def _atom_value(self, atom, whole, loc: str) -> Value:
        if atom[0] == "sym" and atom[1] in self.dim_sources:
            src, axis = self.dim_sources[atom[1]]
            size = self._emit("shape_of", [src], loc, start=axis, end=axis + 1, dtype="i64")
            return self._emit("reshape", [size], loc, shape=())
        if atom[0] == "floordiv":  # sizes are >= 0: truncating division is floor division
            return self._emit("div", [self.dim_value(atom[1], loc),
                                      self.literal(np.int64(atom[2]))], loc)
        raise Unsupported(f"the size {whole} is needed as a value, and {atom[1]} is not a dim "
                          "of an input")

    def _emit(self, op, inputs, loc, **attrs):
        n = make_node(op, inputs, self.namer, loc=loc, **attrs)
        self.nodes.append(n)
        return n.outputs[0]

    def arg(self, a):
        """An FX argument with nodes replaced by what they computed."""
        import torch.fx
        if isinstance(a, torch.fx.Node):
            if a.name in self.poisoned:
                raise _Poisoned()
            v = self.env[a.name]
            if isinstance(v, Missing):
                raise Unsupported(f"it reads {v.what}, which tensorsmith does not compute")
            return v
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        return a

    # --- the program ----------------------------------------------------------------------------
    def run(self, name: str) -> tuple[Graph, list[int]]:
        """The IR graph, and which flat outputs of the program are the user's."""
        from torch.export.graph_signature import InputKind, OutputKind
        ep = self.ep
        sig = ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs}
        constants = {**ep.state_dict, **ep.constants}
        for node in ep.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                val = node.meta.get("val")
                if not hasattr(val, "shape"):
                    raise TorchImportError(f"{self.label}: input {node.name!r} is a "
                                           f"{type(val).__name__}, not a tensor; tensorsmith takes "
                                           "tensor inputs only")
                t = tensor_type(val, self.sym_names)
                v = Value(self.namer(node.name), t)
                self.inputs.append(v)
                for axis, s in enumerate(t.shape):
                    if isinstance(s, DimExpr) and s.is_symbol:
                        self.dim_sources.setdefault(str(s), (v, axis))
                self.env[node.name] = v
            else:  # parameter, buffer, constant: the state_dict key is the param's name
                target = spec.target
                arr = to_numpy(constants[target])
                pname = self.namer(target)
                self.params[pname] = arr
                self.env[node.name] = Value(pname, TensorType.of(arr))
        out_node = None
        requires = range_requirements(ep, self.sym_names)
        with assuming(requires):  # torch guarded these ranges; type rules may rely on them
            for node in ep.graph.nodes:
                if node.op == "call_function":
                    self.call(node)
                elif node.op == "output":
                    out_node = node
                elif node.op != "placeholder":
                    self.problems.append(UnsupportedOp(str(node.op), location(node),
                                                       f"FX node kind {node.op!r} is not supported"))
        if self.problems:
            raise UnsupportedOpsError(self.label, self.problems)
        user = [i for i, s in enumerate(sig.output_specs) if s.kind == OutputKind.USER_OUTPUT]
        flat = list(out_node.args[0])
        outputs = []
        for i in user:
            v = self.arg(flat[i])
            if not isinstance(v, Value):
                if isinstance(v, (int, float, bool, DimExpr)):
                    v = NodeContext(self, out_node, "output").tensor(v)
                else:
                    raise TorchImportError(f"{self.label}: output {i} is a {type(v).__name__}; "
                                           "tensorsmith returns tensors only")
            outputs.append(v)
        g = Graph(_graph_name(name), self.inputs, outputs, self.nodes, self.params, requires)
        try:
            verify(g)
        except VerificationError as e:
            raise TorchImportError(f"{self.label}: the imported IR is invalid (frontend bug): {e}") from e
        return g, user

    def call(self, node) -> None:
        target = node.target
        val = node.meta.get("val")
        if _is_sym(val):  # arithmetic on sizes (sym_size, x.shape[0] * 2, float(t))
            try:
                self.env[node.name] = self.sym_value(val, location(node))
            except Unsupported as e:
                self.problems.append(UnsupportedOp(_op_name(target), location(node), str(e)))
                self.poisoned.add(node.name)
            return
        if target is operator.getitem:
            if node.args[0].name in self.poisoned:
                self.poisoned.add(node.name)
            else:
                self.env[node.name] = self.env[node.args[0].name][node.args[1]]
            return
        name = _op_name(target)
        if name in _NO_OPS:
            self.env[node.name] = None
            return
        conv = lookup(name)
        where = location(node)
        if conv is None:
            self.problems.append(UnsupportedOp(name, where, "no converter for this ATen op"))
            self.poisoned.add(node.name)
            return
        ctx = NodeContext(self, node, where)
        start = len(self.nodes)
        try:
            args, kwargs = self.arg(node.args), self.arg(dict(node.kwargs))
            out = conv(ctx, *args, **kwargs)
        except _Poisoned:
            del self.nodes[start:]
            self.dim_cache.clear()
            self.poisoned.add(node.name)
            return
        except Unsupported as e:
            del self.nodes[start:]
            self.dim_cache.clear()
            self.problems.append(UnsupportedOp(name, where, str(e) or "not supported"))
            self.poisoned.add(node.name)
            return
        except TensorsmithError:
            raise
        except Exception as e:  # noqa: BLE001 - a converter crash names the node, not a traceback
            raise TorchImportError(f"{self.label}: {name} at {where} cannot be converted: "
                                   f"{type(e).__name__}: {e}") from e
        self.env[node.name] = _checked(out, val, name, where)


class _Poisoned(Exception):
    """An input of this node failed to convert (and is already reported)."""


def _checked(out, val, name, where):
    """The converter's output; a dtype different from torch's is a converter bug."""
    if isinstance(out, Value) and hasattr(val, "dtype") and out.dtype != ir_dtype(val.dtype):
        raise TorchImportError(f"{name} at {where}: the converter produced {out.type}, torch "
                               f"says {val.dtype} (frontend bug)")
    return out


def _is_sym(val) -> bool:
    import torch
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool))


def _op_name(target) -> str:
    if callable(target) and not hasattr(target, "_schema"):
        return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"
    return str(target)


def location(node) -> str:
    """'layer1.0.conv2 (model.py:31)': the module path and the innermost user source line."""
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
        path = module_path(path)
    line = source_line(node.meta.get("stack_trace") or "")
    return f"{path} ({line})" if path and line else path or line


def module_path(path: str) -> str:
    """``L['self'].layer1[0].conv2`` / ``layer1.0.conv2`` -> ``layer1.0.conv2``."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']*)'\]", r".\1", path)
    return path.strip(".")


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def source_line(stack_trace: str) -> str:
    """The innermost frame of user code (not torch's own) as 'file.py:12 (fn)'."""
    frames = _FRAME.findall(stack_trace)
    libraries = _library_dirs()
    for path, line, fn in reversed(frames):
        if not path.startswith(libraries):
            return f"{os.path.basename(path)}:{line} ({fn})"
    if frames:
        path, line, fn = frames[-1]
        return f"{os.path.basename(path)}:{line} ({fn})"
    return ""


def _library_dirs() -> tuple[str, ...]:
    """Folders of the model libraries whose frames are not the user's code."""
    import sys
    dirs = []
    for name in _LIBRARIES:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__file__", None):
            dirs.append(os.path.dirname(mod.__file__) + os.sep)
    return tuple(dirs)


def range_requirements(ep, names: dict[str, str]) -> tuple[Requirement, ...]:
    """The export's range constraints (``Dim('batch', min=1, max=64)``) as requirements."""
    out = []
    for sym, vr in ep.range_constraints.items():
        d = sym_dim(sym, names) if not isinstance(sym, int) else sym
        if not isinstance(d, DimExpr):
            continue
        why = f"torch.export range of {d}"
        lo, hi = _finite(vr.lower), _finite(vr.upper)
        if lo is not None and lo > 1:
            out.append(Requirement(d - lo, "torch.export", why))
        if hi is not None:
            out.append(Requirement(hi - d, "torch.export", why))
    return tuple(out)


def _finite(b) -> int | None:
    try:
        return int(b) if b.is_finite else None
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def _graph_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "main"
