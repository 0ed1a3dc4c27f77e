"""Control flow: ops whose bodies are regions (cond, while_loop, scan).

Their type rules read the regions (trait ``region_typed``, see ``verify.node_output_types``):
each region takes the node's operands (as declared below) and the rule checks that the
region's inputs and outputs have the types the op needs. Values a body reads from outside
are passed to the node as extra operands, so a region sees only its inputs and params.
"""
from __future__ import annotations

from ..registry import AttrSpec, OpTypeError, define_op
from ..types import TensorType, dims_equal
from ._rules import require


def _types(vs) -> str:
    return "(" + ", ".join(str(v.type if hasattr(v, "type") else v) for v in vs) + ")"


def _same(a: TensorType, b: TensorType) -> bool:
    from ..verify import types_match  # verify imports the registry; import late to stay acyclic
    return types_match(a, b)


def _check_region(op: str, region, in_types, out_types=None, what: str = "region"):
    """Raise OpTypeError unless ``region`` takes ``in_types`` (and gives ``out_types``)."""
    ins = [v.type for v in region.inputs]
    if len(ins) != len(in_types) or not all(_same(a, b) for a, b in zip(ins, in_types)):
        raise OpTypeError(f"{op}: {what} ^{region.name} takes {_types(ins)}, the node passes "
                          f"{_types(in_types)}")
    outs = [v.type for v in region.outputs]
    if out_types is not None and (len(outs) != len(out_types)
                                  or not all(_same(a, b) for a, b in zip(outs, out_types))):
        raise OpTypeError(f"{op}: {what} ^{region.name} gives {_types(outs)}, expected "
                          f"{_types(out_types)}")
    return outs


def _scalar_bool(op: str, t: TensorType, what: str) -> None:
    require(t.dtype == "bool" and t.rank == 0, f"{op}: {what} must be a bool scalar, got {t}")


def _cond(types, attrs, regions=()):
    require(len(types) >= 1, "cond takes a predicate and its operands")
    require(len(regions) == 2, f"cond needs two regions (then, else), has {len(regions)}")
    _scalar_bool("cond", types[0], "the predicate")
    then = _check_region("cond", regions[0], types[1:], what="then-branch")
    _check_region("cond", regions[1], types[1:], then, what="else-branch")
    return then


define_op("cond", _cond, arity=(1, None), traits=["region", "region_typed"],
          doc="If-then-else: runs region 0 (pred true) or region 1 on the operands after pred; "
              "both regions give the same types.")


def _while(types, attrs, regions=()):
    n = attrs["num_carry"]
    require(0 <= n <= len(types), f"while_loop: num_carry={n} exceeds its {len(types)} operands")
    require(len(regions) == 2, f"while_loop needs two regions (cond, body), has {len(regions)}")
    pred = _check_region("while_loop", regions[0], types, what="cond")
    require(len(pred) == 1, f"while_loop: the cond region gives {len(pred)} values, not 1")
    _scalar_bool("while_loop", pred[0], "the cond region's output")
    _check_region("while_loop", regions[1], types, types[:n], what="body")
    return types[:n]


define_op("while_loop", _while, arity=(0, None), traits=["region", "region_typed"],
          attrs=[AttrSpec("num_carry", "int", doc="leading operands that the body updates; the "
                          "rest are loop-invariant")],
          doc="while cond(*operands): carry = body(*operands); gives the final carry. Both "
              "regions take all operands (carry then invariants).")


def _scan(types, attrs, regions=()):
    nc, nx, length = attrs["num_carry"], attrs["num_xs"], attrs["length"]
    require(nc >= 0 and nx >= 0 and nc + nx <= len(types),
            f"scan: num_carry={nc} + num_xs={nx} exceed its {len(types)} operands")
    require(len(regions) == 1, f"scan needs one region (the body), has {len(regions)}")
    xs = types[nc:nc + nx]
    for x in xs:
        require(x.rank >= 1 and (not isinstance(x.shape[0], int) or dims_equal(x.shape[0], length)),
                f"scan: scanned operand {x} must have leading dim {length}")
    body_in = list(types[:nc]) + [x.with_shape(x.shape[1:]) for x in xs] + list(types[nc + nx:])
    outs = _check_region("scan", regions[0], body_in, what="body")
    require(len(outs) >= nc and all(_same(a, b) for a, b in zip(outs, types[:nc])),
            f"scan: body ^{regions[0].name} gives {_types(outs)}; its first {nc} outputs must "
            f"match the carry {_types(types[:nc])}")
    return list(types[:nc]) + [y.with_shape((length,) + tuple(y.shape)) for y in outs[nc:]]


define_op("scan", _scan, arity=(0, None), traits=["region", "region_typed"],
          attrs=[AttrSpec("num_carry", "int"), AttrSpec("num_xs", "int"),
                 AttrSpec("length", "dim", doc="iterations (the scanned operands' leading dim)"),
                 AttrSpec("reverse", "bool", False, "iterate from the last slice to the first")],
          doc="lax.scan: operands are carry, scanned xs, invariants; the body maps (carry, x "
              "slices, invariants) to (carry, y slices); gives final carry and stacked ys.")
