"""JAX frontend: trace a function with jax.make_jaxpr and turn the jaxpr into IR."""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from ..ir import Graph, Namer, Node, TensorType, Value, dtype_name, make_node, numpy_dtype
from ..ir import origin
from ..ir.registry import OpTypeError
from ..ir.dims import assuming, from_jax
from .jax_rules import PRIMITIVES, IDENTITY, INLINE, COMPOSITE
from ..errors import ModelImportError

_JAX_NN = os.path.join("jax", "_src", "nn", "functions.py")
_JAX_SRC = os.sep + os.path.join("jax", "_src") + os.sep


class MissingParamsError(ModelImportError, TypeError):
    """A function traced without ``params=`` asked for one more argument."""


class UnsupportedPrimitiveError(ModelImportError, NotImplementedError):
    """The traced function uses a JAX primitive tensorsmith cannot represent."""


@dataclass
class Traced:
    """A traced model: the graph plus the pytree structure of its inputs and outputs."""

    graph: Graph
    in_tree: Any
    out_tree: Any


def _path_name(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _arg_names(fn, n_args: int, has_params: bool) -> list[str]:
    try:
        sig = [p.name for p in inspect.signature(fn).parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        sig = []
    sig = sig[1:] if has_params else sig
    return [sig[i] if i < len(sig) else f"arg{i}" for i in range(n_args)]


def source_line(source_info) -> str:
    """'file.py:12 (fn)' for the innermost frame of user code (not JAX's own)."""
    tb = getattr(source_info, "traceback", None)
    frames = getattr(tb, "frames", None) or []
    for fr in frames:
        if _JAX_SRC not in fr.file_name and "/jax/" not in fr.file_name.replace(os.sep, "/") \
                and not fr.file_name.startswith("<frozen"):
            name = fr.function_name.split(".")[-1]
            return f"{os.path.basename(fr.file_name)}:{fr.line_num} ({name})"
    return ""


_CALL_MACHINERY = ("source_info_util.py", "partial_eval.py", "core.py", "pjit.py",
                   "traceback_util.py", "api.py", "linear_util.py", "api_util.py")


def called_from_jax(source_info) -> bool:
    """Whether a call equation (a nested jit) was made by JAX's own library code.

    ``jnp.where`` runs a jitted ``_where``: such helpers are implementation detail, not a
    named call of the user's, so they are inlined rather than kept as composites.
    """
    frames = getattr(getattr(source_info, "traceback", None), "frames", None) or []
    for fr in frames:  # innermost first: skip the call machinery, look at the caller
        path = fr.file_name.replace(os.sep, "/")
        if "/jax/_src/" in path and path.rsplit("/", 1)[-1] in _CALL_MACHINERY:
            continue
        return "/jax/_src/" in path and not path.endswith("nn/functions.py")
    return False


def nn_call(source_info):
    """(jax.nn function name, call site) if the equation comes from a public jax.nn call."""
    tb = getattr(source_info, "traceback", None)
    frames = list(getattr(tb, "frames", None) or [])
    for i in range(len(frames) - 1, -1, -1):  # outermost first
        fr = frames[i]
        if fr.file_name.endswith(_JAX_NN):
            name = fr.function_name.split(".")[-1]
            if name.startswith("_"):
                return None
            caller = frames[i + 1] if i + 1 < len(frames) else None
            site = (caller.file_name, caller.line_num) if caller else None
            return (name, site)
    return None


class Converter:
    """Walks jaxprs, emitting IR nodes; nested calls become composites."""

    def __init__(self, namer: Namer, params: dict):
        self.namer = namer
        self.params = params  # name -> array (root graph); consts of inner jaxprs land here too
        self.nodes: list[Node] = []
        # Where the enclosing call was made: equations JAX traced lazily (the body of a
        # custom_jvp such as jax.nn.relu) carry no user frame, so they inherit this one.
        self.outer_loc = ""

    # --- values ------------------------------------------------------------------------
    def literal(self, lit) -> Value:
        val = np.asarray(lit.val)
        if val.ndim == 0:
            return self.emit("constant", [], value=val.item(),
                             dtype=dtype_name(lit.aval.dtype))
        return self.const(val)

    def const(self, array, hint: str = "const") -> Value:
        arr = np.asarray(array)
        if arr.ndim == 0 and arr.dtype.kind in "biuf":
            return self.emit("constant", [], value=arr.item(), dtype=dtype_name(arr.dtype))
        name = Namer(self.namer.taken, hint)()
        self.namer.reserve(name)
        self.params[name] = arr
        return Value(name, TensorType.of(arr))

    def emit(self, op: str, inputs, *, regions=(), loc: str = "", **attrs):
        n = make_node(op, inputs, self.namer, regions=regions, loc=loc or self.outer_loc, **attrs)
        self.nodes.append(n)
        return n.outputs[0] if len(n.outputs) == 1 else n.outputs

    # --- jaxprs ------------------------------------------------------------------------
    def run(self, jaxpr, consts, args: list[Value], group: bool = True) -> list[Value]:
        """Convert ``jaxpr`` applied to ``args``; returns the values of its outputs.

        With ``group``, runs of equations from one jax.nn call become composites; without,
        nested calls are inlined (the body of a composite that is already one such call).
        """
        env: dict = {}
        for var, c in zip(jaxpr.constvars, consts):
            env[var] = self.const(c)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a

        def read(v):
            return self.literal(v) if _is_literal(v) else env[v]

        eqns = list(jaxpr.eqns)
        last_use = {}
        for i, e in enumerate(eqns):
            for v in e.invars:
                if not _is_literal(v):
                    last_use[v] = i
        for v in jaxpr.outvars:
            if not _is_literal(v):
                last_use[v] = len(eqns)
        i = 0
        while i < len(eqns):
            if not group:
                self.eqn_inlined(eqns[i], env, read)
                i += 1
                continue
            key = nn_call(eqns[i].source_info)
            j = i + 1
            if key is not None:
                while j < len(eqns) and nn_call(eqns[j].source_info) == key:
                    j += 1
                self.group(f"jax.nn.{key[0]}", eqns[i:j], env, read, last_use, j)
            else:
                self.eqn(eqns[i], env, read)
            i = j
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, e, env, read) -> None:
        name = e.primitive.name
        ins = [read(v) for v in e.invars]
        loc = source_line(e.source_info) or self.outer_loc
        outer_loc, self.outer_loc = self.outer_loc, loc
        try:
            self._eqn(e, env, ins, loc, name)
        finally:
            self.outer_loc = outer_loc

    def _eqn(self, e, env, ins, loc, name) -> None:
        if name in IDENTITY:
            outs = ins[: len(e.outvars)]
        elif name in CUSTOM_DERIVATIVE and _user_function(e):
            outs = self.custom_derivative(e, ins, loc)
        elif name in INLINE:
            sub, consts = INLINE[name](e.params)
            outs = self.run(sub, consts, ins)
        elif name in COMPOSITE and called_from_jax(e.source_info):
            sub, consts = COMPOSITE[name](e.params)
            outs = self.run(sub, consts, ins)
        elif name in COMPOSITE:
            sub, consts = COMPOSITE[name](e.params)
            call = str(e.params.get("name", name))
            keys = {nn_call(x.source_info) for x in sub.eqns}
            if len(keys) == 1 and None not in keys and next(iter(keys))[0] == call:
                # A jitted jax.nn function (relu): one composite named for it, body flat.
                outs = self.composite(f"jax.nn.{call}", sub, consts, ins, loc, group=False)
            else:
                outs = self.composite(call, sub, consts, ins, loc)
            if not consts and _has_custom_derivative(sub.eqns):  # softplus: jnp.logaddexp's rule
                _record_original(self.nodes[-1], ins, lambda args, params: _bind(e, args))
        elif name in PRIMITIVES:
            try:
                out = PRIMITIVES[name](self, e, ins, loc)
            except OpTypeError as err:
                raise OpTypeError(f"JAX primitive {name!r} at {loc or '?'}: {err}") from None
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
        else:
            known = set(PRIMITIVES) | set(IDENTITY) | set(INLINE) | set(COMPOSITE)
            raise UnsupportedPrimitiveError(
                f"JAX primitive {name!r} is not supported (used at {loc or 'an unknown line'}); "
                f"{len(known)} primitives are supported "
                f"(tensorsmith.frontends.jax_rules)")
        for var, v in zip(e.outvars, outs):
            env[var] = v

    def composite(self, name: str, jaxpr, consts, ins: list[Value], loc: str,
                  group: bool = True) -> list[Value]:
        """Convert a nested jaxpr into a composite node whose region is its body."""
        body_in = [Value(self.namer(), v.type) for v in ins]
        outer, self.nodes = self.nodes, []
        try:
            body_out = self.run(jaxpr, consts, body_in, group=group)
            body = Graph(name, body_in, body_out, self.nodes, {})
        finally:
            self.nodes = outer
        outs = self.emit("composite", ins, regions=[body], loc=loc, name=name)
        return list(outs) if isinstance(outs, tuple) else [outs]

    def custom_derivative(self, e, ins: list[Value], loc: str) -> list[Value]:
        """A user's jax.custom_jvp / custom_vjp function: a composite of its primal body that
        codegen lowers through the original function (and so its derivative rule)."""
        sub, consts = INLINE[e.primitive.name](e.params)
        info = getattr(sub, "debug_info", None)
        outs = self.composite(getattr(info, "func_name", None) or e.primitive.name, sub, consts,
                              ins, loc)
        if not consts:  # closed-over arrays are params a pass may change: lower the body then
            _record_original(self.nodes[-1], ins, lambda args, params: _bind(e, args))
        return outs

    def group(self, name, eqns, env, read, last_use, end) -> None:
        """Wrap a run of equations from one jax.nn call into a composite."""
        defined = {v for e in eqns for v in e.outvars}
        inputs: list = []
        for e in eqns:
            for v in e.invars:
                if not _is_literal(v) and v not in defined and v not in inputs \
                        and not self._is_param(env[v]):
                    inputs.append(v)
        outputs = [v for e in eqns for v in e.outvars if last_use.get(v, -1) >= end]
        if not outputs:
            return
        ins = [env[v] for v in inputs]
        body_in = [Value(self.namer(), v.type) for v in ins]
        outer, self.nodes = self.nodes, []
        try:
            inner_env = dict(env)
            inner_env.update(zip(inputs, body_in))

            def inner_read(v):
                return self.literal(v) if _is_literal(v) else inner_env[v]

            for e in eqns:
                self.eqn_inlined(e, inner_env, inner_read)
            body = Graph(name, body_in, [inner_env[v] for v in outputs], self.nodes, {})
        finally:
            self.nodes = outer
        loc = source_line(eqns[0].source_info) or self.outer_loc
        outs = self.emit("composite", ins, regions=[body], loc=loc, name=name)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        if _has_custom_derivative(eqns):  # jax.nn.relu, softplus (jnp.logaddexp)
            _record_original(self.nodes[-1], ins, _replay(eqns, inputs, outputs, dict(env)))
        env.update(zip(outputs, outs))

    def eqn_inlined(self, e, env, read) -> None:
        """Like eqn(), but nested jit calls are inlined (inside a jax.nn composite)."""
        name = e.primitive.name
        if name in COMPOSITE:
            sub, consts = COMPOSITE[name](e.params)
            outs = self.run(sub, consts, [read(v) for v in e.invars])
            env.update(zip(e.outvars, outs))
        else:
            self.eqn(e, env, read)

    def _is_param(self, v: Value) -> bool:
        return v.name in self.params


CUSTOM_DERIVATIVE = ("custom_jvp_call", "custom_vjp_call")


def _user_function(e) -> bool:
    """Whether a custom_jvp/custom_vjp call is a user's function (not one inside jax/jnp)."""
    sub, _ = INLINE[e.primitive.name](e.params)
    src = getattr(getattr(sub, "debug_info", None), "func_src_info", "") or ""
    return _JAX_SRC not in src and "/jax/_src/" not in src.replace(os.sep, "/")


def _has_custom_derivative(eqns) -> bool:
    """Whether any equation, or one in a nested call's jaxpr, has a custom derivative rule."""
    for e in eqns:
        if e.primitive.name in CUSTOM_DERIVATIVE:
            return True
        for p in e.params.values():
            sub = getattr(p, "jaxpr", p)
            if hasattr(sub, "eqns") and _has_custom_derivative(sub.eqns):
                return True
    return False


def _bind(e, args) -> list:
    """Apply equation ``e``'s primitive to ``args`` as jax.core.eval_jaxpr does."""
    out = e.primitive.bind(*args, **e.primitive.get_bind_params(e.params))
    return list(out) if e.primitive.multiple_results else [out]


def _replay(eqns, inputs, outputs, env) -> Callable:
    """fn(args, params) evaluating ``eqns`` with the original primitives (custom rules kept)."""
    def fn(args, params):
        vals = dict(zip(inputs, args))

        def read(v):
            if _is_literal(v):
                return v.val
            return vals[v] if v in vals else params[env[v].name]  # a weight, by its name now

        for e in eqns:
            vals.update(zip(e.outvars, _bind(e, [read(v) for v in e.invars])))
        return [vals[v] for v in outputs]
    return fn


def _record_original(node: Node, ins: list[Value], fn: Callable) -> None:
    if all(v.type.is_static for v in ins):  # a symbolic trace's rule would not fit other shapes
        origin.record(node.attrs["name"], node.body, fn,
                      tuple((tuple(v.type.shape), numpy_dtype(v.type.dtype)) for v in ins))


def _is_literal(v) -> bool:
    return hasattr(v, "val") and not hasattr(v, "count") and type(v).__name__ == "Literal"


def _canonical_dtype(x) -> np.dtype:
    """The dtype JAX computes ``x`` in (float64 -> float32 unless x64 is on; Python scalars)."""
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _abstract(x, batch_symbol):
    shape = tuple(np.shape(x))
    dtype = _canonical_dtype(x)
    if batch_symbol and shape:
        shape = (batch_symbol,) + shape[1:]
    return shape, np.dtype(dtype)


def input_names(fn: Callable, example_args: tuple, has_params: bool) -> list[str]:
    """The graph input name of each leaf of ``example_args`` (``x``, ``batch/image``)."""
    top_names = _arg_names(fn, len(example_args), has_params)
    names = []
    for i, a in enumerate(example_args):
        for path, _ in jax.tree_util.tree_flatten_with_path(a)[0]:
            sub = _path_name(path)
            names.append(f"{top_names[i]}/{sub}" if sub else top_names[i])
    return names


def input_declarations(fn: Callable, example_args: tuple, has_params: bool,
                       batch_dim=None) -> list[tuple[str, TensorType]]:
    """``[(name, type)]`` of the inputs tracing would create; dims of ``jax.ShapeDtypeStruct``
    examples made with ``jax.export.symbolic_shape`` stay symbols."""
    batch_symbol = "N" if batch_dim is True else batch_dim
    out = []
    for n, a in zip(input_names(fn, example_args, has_params), jax.tree_util.tree_leaves(example_args)):
        shape, dtype = _abstract(a, batch_symbol)
        out.append((n, TensorType(tuple(d if isinstance(d, int) else str(d) for d in shape),
                                  dtype_name(dtype))))
    return out


def trace_model(fn: Callable, *example_args, params=None, batch_dim=None,
                name: str | None = None) -> Traced:
    """Trace ``fn(*args)`` (or ``fn(params, *args)``) into a Graph plus pytree structure.

    Example args may be arrays or ``jax.ShapeDtypeStruct``; shapes made with
    ``jax.export.symbolic_shape("N, H, W, 3")`` become symbolic dims (``batch_dim=`` is a
    shorthand for a symbolic first dim).
    """
    if not callable(fn):
        raise TypeError(f"trace() needs a callable JAX function, got {type(fn).__name__}")
    batch_symbol = "N" if batch_dim is True else batch_dim
    if batch_symbol is not None and (not isinstance(batch_symbol, str) or not batch_symbol.isidentifier()):
        raise ValueError(f"batch_dim must be True or a symbol name like 'N', got {batch_dim!r}")
    has_params = params is not None
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params) if has_params else ([], None)
    p_names = [_path_name(path) or "params" for path, _ in p_leaves]
    flat_args, in_tree = jax.tree_util.tree_flatten(example_args)
    if not flat_args:
        raise ValueError("trace() needs at least one example input")
    out_tree_box = []

    def flat_fn(p_flat, *a_flat):
        args = jax.tree_util.tree_unflatten(in_tree, a_flat)
        out = fn(jax.tree_util.tree_unflatten(p_tree, p_flat), *args) if has_params else fn(*args)
        leaves, tree = jax.tree_util.tree_flatten(out)
        out_tree_box.append(tree)
        return leaves

    specs = []
    if batch_symbol:
        sym, = jax.export.symbolic_shape(batch_symbol)
    for a in flat_args:
        shape, dtype = _abstract(a, batch_symbol)
        if batch_symbol and shape:
            shape = (sym,) + shape[1:]
        specs.append(jax.ShapeDtypeStruct(shape, dtype))
    # Weights are stored as JAX computes with them: a float64 numpy array or a Python float
    # becomes float32 (unless x64 is on), as it would under jax.jit.
    p_specs = [jax.ShapeDtypeStruct(np.shape(x), _canonical_dtype(x)) for _, x in p_leaves]
    try:
        closed = jax.make_jaxpr(flat_fn)(p_specs, *specs)
    except TypeError as e:
        if has_params or "required positional argument" not in str(e):
            raise
        # fn(params, x) called as fn(x): say how to pass the weights (issue 20)
        raise MissingParamsError(
            f"calling {getattr(fn, '__name__', 'the function')} with {len(example_args)} example "
            f"input(s) failed: {e}. If its first argument is the weights, as in fn(params, x), "
            f"pass them as params=: compile(fn, x, params=params)") from None

    namer = Namer(p_names)
    graph_params = {n: np.asarray(x, dtype=spec.dtype)
                    for n, (_, x), spec in zip(p_names, p_leaves, p_specs)}
    conv = Converter(namer, graph_params)
    arg_leaf_names = input_names(fn, example_args, has_params)
    inputs = [Value(namer(n), TensorType(tuple(from_jax(d) for d in s.shape), dtype_name(s.dtype)))
              for n, s in zip(arg_leaf_names, specs)]
    jaxpr = closed.jaxpr
    conv.dim_sources = inputs  # dim_as_value reads symbolic sizes off these
    args = [Value(n, TensorType.of(graph_params[n])) for n in p_names] + inputs
    requires = _declared_requirements(specs)
    with assuming(requires):  # jax traced under them; the IR's type rules may rely on them too
        outs = conv.run(jaxpr, closed.consts, args)
    gname = name or getattr(fn, "__name__", "main")
    if not gname.isidentifier():
        gname = "main"
    graph = Graph(gname, inputs, outs, conv.nodes, conv.params, requires)
    return Traced(graph, in_tree, out_tree_box[-1])


def _declared_requirements(specs) -> tuple:
    """Constraints given to ``jax.export.symbolic_shape(..., constraints=[...])``, as requirements."""
    from ..ir.graph import Requirement
    scopes = {}
    for spec in specs:
        for d in getattr(spec, "shape", ()):
            sc = getattr(d, "scope", None)
            if sc is not None:
                scopes[id(sc)] = sc
    out = []
    for sc in scopes.values():
        for c in getattr(sc, "_explicit_constraints", ()):  # jax keeps them as e1 >= e2 (or ==)
            diff = from_jax(c.e1) - from_jax(c.e2)
            why = f"jax.export constraint {c.debug_str!r}"
            out.append(Requirement(diff, "symbolic_shape", why))
            if getattr(c.cmp, "name", "") == "EQ":
                out.append(Requirement(-diff, "symbolic_shape", why))
    return tuple(out)


def trace(fn: Callable, *example_args, params=None, batch_dim=None, name: str | None = None) -> Graph:
    """Trace a JAX function into a Graph (``params``: traced as ``fn(params, *args)``)."""
    return trace_model(fn, *example_args, params=params, batch_dim=batch_dim, name=name).graph
