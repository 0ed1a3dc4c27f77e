"""The ATen converter table: one converter per ATen overload (``aten.convolution.default``)."""
from __future__ import annotations

import functools
from typing import Callable

Converter = Callable  # fn(ctx: NodeContext, *args, **kwargs) -> Value | tuple

CONVERTERS: dict[str, Converter] = {}
# Size queries the importer follows as dim expressions (no IR is emitted for them).
SYMBOLIC = frozenset({"aten.sym_size.int", "aten.sym_numel.default"})


def aten_op(*names: str):
    """Register ``fn(ctx, *args, **kwargs)`` as the converter of the ATen overloads ``names``.

    ``args``/``kwargs`` are the FX node's, with tensors as IR values, symbolic ints as dims
    and everything else (ints, floats, lists, dtypes) as torch gave it.
    """
    def deco(fn):
        for name in names:
            if name in CONVERTERS:
                raise ValueError(f"ATen op {name!r} already has a converter")
            CONVERTERS[name] = fn
        return fn
    return deco


def lookup(name: str) -> Converter | None:
    """The converter of ATen overload ``name``, or None."""
    return CONVERTERS.get(name)


@functools.lru_cache(maxsize=1)
def core_aten_ops() -> tuple[str, ...]:
    """Every overload torch tags ``torch.Tag.core`` (the Core ATen op set), sorted."""
    import torch
    # every registered aten schema (dir(torch.ops.aten) lists only packets loaded so far)
    names = {s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
             if s.name.startswith("aten::")}
    found = set()
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():
            op = getattr(packet, overload)
            if torch.Tag.core in op.tags:
                found.add(str(op))
    return tuple(sorted(found))


def coverage() -> dict:
    """How much of the Core ATen op set has a converter: counts and the missing names.

    ``decomposed``: core ops without a converter that ``run_decompositions()`` (torch's
    default table) rewrites into others before the frontend sees them.
    """
    from torch.export import default_decompositions
    core = core_aten_ops()
    converted = [op for op in core if op in CONVERTERS or op in SYMBOLIC]
    missing = [op for op in core if op not in converted]
    table = {str(k) for k in default_decompositions().keys()}
    return {"core": len(core), "converted": len(converted), "missing": missing,
            "decomposed": [op for op in missing if op in table],
            "extra": sorted(set(CONVERTERS) - set(core))}
