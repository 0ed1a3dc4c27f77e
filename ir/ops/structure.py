"""Ops that carry regions: composites (named sub-graphs)."""
from __future__ import annotations

from ..registry import AttrSpec, define_op


def _composite(types, attrs):
    # The body's own output types are the node's types; the verifier checks the region
    # against the node (see verify._check_regions), so the rule itself has nothing to add.
    raise NotImplementedError("composite types come from the body")


COMPOSITE = define_op(
    "composite", _composite, arity=(0, None), traits=["region", "any"],
    attrs=[AttrSpec("name", "str", doc="what the body computes: 'jax.nn.gelu', 'fused.dense_relu'")],
    doc="A named sub-graph: passes may treat it as one op; codegen inlines the body.")
