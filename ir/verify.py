"""The verifier: SSA, order, types against each op's type rule, params, regions."""
from __future__ import annotations

from .graph import Graph, Node, Value
from .registry import OPS, OpAttrError, OpTypeError, UnknownOpError, did_you_mean
from .types import TensorType, dims_equal
from ..errors import VerifyError


class VerificationError(VerifyError, ValueError):
    """Broken IR; names the pass (if any), the node and the rule it broke."""

    def __init__(self, message: str, node: Node | None = None, rule: str = ""):
        super().__init__(message)
        self.node, self.rule = node, rule


def types_match(a: TensorType, b: TensorType) -> bool:
    """Same dtype and rank, dims equal (symbolic dims compared as expressions)."""
    return (a.dtype == b.dtype and a.rank == b.rank
            and all(dims_equal(x, y) for x, y in zip(a.shape, b.shape)))


def describe(n: Node) -> str:
    """How an error names a node: its outputs, op and origin."""
    outs = ", ".join(f"%{v.name}" for v in n.outputs) or "(no outputs)"
    where = f" [{n.loc}]" if n.loc else ""
    return f"node {outs} = {n.op}(...){where}"


def node_output_types(n: Node) -> tuple[TensorType, ...]:
    """The output types an op's rule gives for this node (composites: the body's)."""
    od = OPS.get(n.op)
    if od is None:
        raise UnknownOpError(f"unknown op {n.op!r}{did_you_mean(n.op, OPS)}")
    if "region" in od.traits and n.op == "composite":
        od.check_attrs(n.attrs)
        if len(n.regions) != 1:
            raise OpTypeError(f"composite needs exactly one region, has {len(n.regions)}")
        body = n.regions[0]
        if len(body.inputs) != len(n.inputs) or not all(
                types_match(a.type, b.type) for a, b in zip(body.inputs, n.inputs)):
            raise OpTypeError("composite body inputs "
                              f"({', '.join(str(v.type) for v in body.inputs)}) do not match the "
                              f"node's inputs ({', '.join(str(v.type) for v in n.inputs)})")
        return tuple(v.type for v in body.outputs)
    if "region_typed" in od.traits:  # cond, while_loop, scan: the rule also reads the regions
        od.check_attrs(n.attrs)
        return tuple(od.type_rule([v.type for v in n.inputs], n.attrs, n.regions))
    return od.infer([v.type for v in n.inputs], n.attrs)


def verify(g: Graph, context: str = "") -> None:
    """Raise VerificationError for the first broken rule; ``context`` prefixes the message."""
    prefix = f"{context}: " if context else ""
    for name, arr in g.params.items():
        try:
            TensorType.of(arr)
        except (ValueError, TypeError) as e:
            raise VerificationError(f"{prefix}param @{name}: {e}", rule="param-type") from None
    env: dict[str, Value] = {n: g.param(n) for n in g.params}
    from .dims import assuming
    with assuming(g.requires):  # the graph's requirements are facts for its type rules
        _verify_body(g, env, set(g.params), prefix, is_root=True)
    _verify_annotations(g, prefix)


def _verify_annotations(g: Graph, prefix: str) -> None:
    """Each annotation names a param or value; a mask has its target's shape, bool."""
    types_ = {v.name: v.type for v in g.inputs}
    types_.update({n: g.param(n).type for n in g.params})
    for n in g.nodes:
        types_.update({o.name: o.type for o in n.outputs})
    for a in g.annotations:
        t = types_.get(a.target)
        if t is None:
            raise VerificationError(f"{prefix}annotation {a.kind} names {a.target!r}, which is "
                                    "no param or value of the graph", rule="annotation-target")
        if a.kind == "mask" and a.array is not None:
            want = TensorType(t.shape, "bool")
            if a.type != want:
                raise VerificationError(f"{prefix}mask on {a.target!r} is {a.type}, its target "
                                        f"is {t} (a mask must be {want})", rule="annotation-mask")


def _verify_body(g: Graph, env: dict[str, Value], params: set[str], prefix: str,
                 is_root: bool) -> None:
    def fail(msg, node=None, rule=""):
        where = f"{describe(node)}: " if node is not None else ""
        inside = "" if is_root else f"in region ^{g.name}: "
        raise VerificationError(f"{prefix}{inside}{where}rule '{rule}': {msg}", node, rule)

    for v in g.inputs:
        if v.name in env:
            fail(f"graph input %{v.name} is defined twice (or shadows a param)", rule="ssa")
        env[v.name] = v
    for n in g.nodes:
        for v in n.inputs:
            if v.name not in env:
                if any(o.name == v.name for m in g.nodes for o in m.outputs):
                    fail(f"%{v.name} is used before it is defined (nodes out of order)", n, "order")
                fail(f"%{v.name} is not defined" + (" (missing param)" if is_root else ""), n,
                     "param" if v.name not in params else "defined")
            if not types_match(env[v.name].type, v.type):
                fail(f"input %{v.name} is declared {v.type} where it is defined as "
                     f"{env[v.name].type}", n, "use-type")
        try:
            inferred = node_output_types(n)
        except OpTypeError as e:
            rule = "op" if isinstance(e, UnknownOpError) else "attr" if isinstance(e, OpAttrError) else "type"
            fail(str(e), n, rule)
        if len(inferred) != len(n.outputs):
            fail(f"declares {len(n.outputs)} outputs but {n.op} gives {len(inferred)}", n, "arity")
        for v, t in zip(n.outputs, inferred):
            if not types_match(v.type, t):
                fail(f"output %{v.name} is declared {v.type} but the type rule gives {t}", n, "type")
        for r in n.regions:
            _verify_body(r, {p: env[p] for p in params}, params, prefix, is_root=False)
        for v in n.outputs:
            if v.name in env:
                fail(f"%{v.name} is defined twice", n, "ssa")
            env[v.name] = v
    for v in g.outputs:
        if v.name not in env:
            fail(f"graph output %{v.name} is not defined", rule="defined")
        if not types_match(env[v.name].type, v.type):
            fail(f"graph output %{v.name} is declared {v.type} where it is defined as "
                 f"{env[v.name].type}", rule="use-type")
