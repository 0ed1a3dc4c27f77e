"""Constant folding: evaluate nodes whose inputs are all known and keep the results as weights."""
from __future__ import annotations

import re

import numpy as np

from ..ir import Graph, Node, TensorType
from ..ir.types import is_float, is_int
from .context import PassContext
from .registry import Option, register_pass
from .rewrite import Rewriter, apply_patterns, pattern

# Producers whose values are known without running the model.
CONSTANT_SOURCES = frozenset({"constant", "iota"})
# Never folded themselves: they are already literals (or free to recompute), so folding them
# only trades a few bytes of IR for a stored array.
NEVER_FOLD = CONSTANT_SOURCES
# Kept as they are even on constant inputs: dequantize(weight) is how a quantized weight is
# stored (low-precision param + scale); folding it would store the float weight again.
KEEP_OPS = frozenset({"dequantize"})
# A folded result may be at most this many times the bytes of the params it reads (a uniform
# result is exempt: it becomes a `constant` node, which costs nothing). This keeps
# broadcast_in_dim, pad, outer products and the like from bloating the model.
MAX_GROWTH = 2
FOLDED = ".folded"


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def uniform_value(arr: np.ndarray, dtype: str):
    """The one value every element of ``arr`` has (bit for bit), as a plain scalar; else None."""
    if arr.size == 0 or arr.dtype.itemsize not in (1, 2, 4, 8) or dtype in ("c64", "c128"):
        return None
    flat = np.ascontiguousarray(arr).reshape(-1)
    bits = flat.view(f"u{arr.dtype.itemsize}")  # bitwise: keeps -0.0 apart from 0.0, NaN equal
    if not (bits == bits[0]).all():
        return None
    if dtype == "bool":
        return bool(flat[0])
    if is_int(dtype):
        return int(flat[0])
    return float(flat[0]) if is_float(dtype) else None


def _name_source(params: dict[str, np.ndarray]) -> str | None:
    """The param a folded result is named after: the biggest one it reads (a kernel, not a scale)."""
    return max(params, key=lambda k: params[k].size) if params else None


def _known_inputs(rw: Rewriter, node: Node):
    """(params read, constant/iota producers) when every input is known, else None."""
    params: dict[str, np.ndarray] = {}
    sources: list[Node] = []
    for v in node.inputs:
        arr = rw.param_array(v)
        if arr is not None:
            params[v.name] = arr
            continue
        p = rw.producer(v)
        if p is None or p.op not in CONSTANT_SOURCES:
            return None
        if p not in sources:
            sources.append(p)
    # a composite body may read root params by name
    params.update({v.name: rw.params[v.name] for v in node.region_reads if v.name in rw.params})
    return params, sources


# Ops whose result is uniform when every input is: folding them on uniform inputs yields a
# free `constant` node, so their size is no reason not to evaluate them.
_KEEPS_UNIFORM_SHAPE_OPS = frozenset({"broadcast_in_dim", "reshape", "transpose", "expand_dims",
                                      "squeeze", "slice", "rev", "dynamic_slice", "dot_general",
                                      "softmax", "log_softmax"})


def keeps_uniform(op: str) -> bool:
    """Whether ``op`` maps inputs that are each one repeated value to such a result."""
    from ..ir.registry import OPS
    traits = OPS[op].traits if op in OPS else frozenset()
    return ("elementwise" in traits or op in _KEEPS_UNIFORM_SHAPE_OPS
            or ("reduction" in traits and not op.startswith("arg")))


def _growth_message(out_bytes: int, in_bytes: int) -> str:
    return (f"did not fold: its result ({_human(out_bytes)}) would be over {MAX_GROWTH}x "
            f"the {_human(in_bytes)} of params it reads")


class Budget:
    """Bytes folding may add to the model's weights: at most (MAX_GROWTH - 1) x what it had,
    net of the params that folding leaves unread (so one param read by 16 foldable nodes
    cannot become 16 copies)."""

    def __init__(self, params: dict):
        self.start = sum(TensorType.of(a).nbytes() for a in params.values())
        self.limit = (MAX_GROWTH - 1) * self.start
        self.added = 0

    def refuses(self, cost: int) -> str | None:
        """Why a fold adding ``cost`` bytes (net) is refused, else None (and it is counted)."""
        if cost > 0 and self.added + cost > self.limit:
            return (f"did not fold: the model's folded weights would grow past {MAX_GROWTH}x its "
                    f"{_human(self.start)} of params (already +{_human(max(self.added, 0))})")
        self.added += cost
        return None


def plan_folds(graph: Graph, max_bytes: int) -> tuple[list[Node], dict[str, str]]:
    """(nodes to evaluate, {node name: why it will not fold}), decided from types alone.

    Sizes come from each node's output type, so nothing that would be refused (over
    ``max_bytes``, over MAX_GROWTH x its inputs, over the model's growth budget) is ever
    evaluated. A result is assumed uniform (free) only when every input is uniform and the op
    keeps it so; the pattern checks the real result again.
    """
    known: dict[str, str] = {}  # value -> "param" | "constant" | "iota"
    nbytes: dict[str, int] = {}
    uniform_values: set[str] = set()
    for k, a in graph.params.items():
        if not getattr(a, "abstract", False):
            known[k], nbytes[k] = "param", TensorType.of(a).nbytes()
            if a.size and uniform_value(a, TensorType.of(a).dtype) is not None:
                uniform_values.add(k)
    uses: dict[str, int] = {}
    for n in graph.nodes:
        for v in (*n.inputs, *n.region_reads):
            uses[v.name] = uses.get(v.name, 0) + 1
    for v in graph.outputs:
        uses[v.name] = uses.get(v.name, 0) + 1
    budget = Budget(graph.params)
    evaluate: list[Node] = []
    refused: dict[str, str] = {}
    for n in graph.nodes:
        reads = [v.name for v in (*n.inputs, *n.region_reads)]
        if n.op in KEEP_OPS or not all(r in known for r in reads) or not all(o.type.is_static for o in n.outputs):
            continue
        if n.op in CONSTANT_SOURCES:
            evaluate.append(n)
            known.update({o.name: n.op for o in n.outputs})
            if n.op == "constant":
                uniform_values.update(o.name for o in n.outputs)
            continue
        out_bytes = sum(o.type.nbytes() for o in n.outputs)
        if out_bytes > max_bytes:
            refused[n.name] = (f"did not fold: the result ({_human(out_bytes)}) is over "
                               f"max_bytes={max_bytes}")
            continue
        distinct = dict.fromkeys(reads)
        in_bytes = sum(nbytes[r] for r in distinct if known[r] == "param")
        uniform = all(v.name in uniform_values for v in n.inputs) and keeps_uniform(n.op)
        if out_bytes > MAX_GROWTH * in_bytes and not uniform:
            refused[n.name] = _growth_message(out_bytes, in_bytes)
            continue
        freed = sum(nbytes[r] for r in distinct
                    if known[r] == "param" and uses.get(r, 0) == reads.count(r))
        why = None if uniform else budget.refuses(out_bytes - freed)
        if why:
            refused[n.name] = why
            continue
        for r in distinct:
            uses[r] = uses.get(r, 0) - reads.count(r)
        evaluate.append(n)
        for o in n.outputs:  # a uniform result becomes a constant node, else a param
            known[o.name] = "constant" if uniform else "param"
            nbytes[o.name] = 0 if uniform else o.type.nbytes()
            if uniform:
                uniform_values.add(o.name)
    return evaluate, refused


def evaluate_foldable(graph: Graph, ctx: PassContext | None,
                      planned: list[Node]) -> dict[str, np.ndarray]:
    """The values of the planned nodes, computed by one executor call: one XLA compile for the
    lot rather than one per primitive. {} when fewer than two nodes fold or the batch fails
    (each node is then evaluated on its own, and a failure becomes that node's remark)."""
    if ctx is None or ctx.executor is None:
        return {}
    want = [o for n in planned if n.op not in NEVER_FOLD for o in n.outputs]
    if len(want) < 2:
        return {}
    reads = {v.name for n in planned for v in (*n.inputs, *n.region_reads)}
    planned = [n for n in planned if n.op not in NEVER_FOLD or n.outputs[0].name in reads]
    batch = Graph("fold", (), tuple(want), tuple(planned),
                  {k: a for k, a in graph.params.items() if k in reads})
    try:
        results = ctx.run(batch, jit=True)
    except Exception:  # noqa: BLE001  (the per-node path reports what failed, node by node)
        return {}
    return {o.name: r for o, r in zip(want, results)}


def _freed_bytes(rw: Rewriter, node: Node, params: dict) -> int:
    """Bytes of the params only ``node`` reads: they die when it folds."""
    return sum(TensorType.of(a).nbytes() for k, a in params.items()
               if k not in rw.outputs and all(u.name == node.name for u in rw.users.get(k, ())))


def _fold_pattern(max_bytes: int, evaluated: dict[str, np.ndarray], refused: dict[str, str],
                  budget: Budget):
    @pattern("fold-constants")
    def fold(rw: Rewriter, node: Node):
        if node.op in NEVER_FOLD or node.op in KEEP_OPS:
            return None
        known = _known_inputs(rw, node)
        if known is None:
            return None
        params, sources = known
        if any(a.kind == "packed" for k in params for a in rw.annotations(k)):
            return None  # low-bit weights packed in bytes are unpacked in the program (lower-quant)
        not_loaded = [k for k, a in params.items() if getattr(a, "abstract", False)]
        if not_loaded:
            rw.remark("missed", f"did not fold: param @{not_loaded[0]} is declared but not loaded",
                      node)
            return None
        if any(not o.type.is_static for o in node.outputs):
            return None
        if rw.ctx is None or rw.ctx.executor is None:
            rw.remark("missed", "did not fold constants: the pass context has no executor "
                                "(compile() provides one; else PassContext(executor=...))")
            return None
        if node.name in refused:  # decided from sizes, before evaluating anything
            rw.remark("missed", refused[node.name], node)
            return None
        out_bytes = sum(o.type.nbytes() for o in node.outputs)
        if out_bytes > max_bytes:
            rw.remark("missed", f"did not fold: the result ({_human(out_bytes)}) is over "
                                f"max_bytes={max_bytes}", node)
            return None
        in_bytes = sum(TensorType.of(a).nbytes() for a in params.values())
        grows = out_bytes > MAX_GROWTH * in_bytes
        if grows and (any(rw.constant_value(v) is None for v in node.inputs)
                      or not keeps_uniform(node.op)):
            rw.remark("missed", _growth_message(out_bytes, in_bytes), node)  # cannot be uniform
            return None
        results = [evaluated.get(o.name) for o in node.outputs]
        if any(r is None for r in results):
            tiny = Graph("fold", (), node.outputs, (*sources, node), params)
            try:
                results = rw.ctx.run(tiny)
            except Exception as e:  # an op codegen cannot run standalone is a miss, not a failure
                rw.remark("missed", f"did not fold: evaluating it failed: {type(e).__name__}: {e}",
                          node)
                return None
        for o, arr in zip(node.outputs, results):
            if TensorType.of(arr) != o.type:
                rw.remark("missed", f"did not fold: the executor returned {TensorType.of(arr)} "
                                    f"for {o.type}", node)
                return None
        uniform = [uniform_value(a, o.dtype) for o, a in zip(node.outputs, results)]
        if grows and any(u is None for u in uniform):
            rw.remark("missed", _growth_message(out_bytes, in_bytes), node)
            return None
        stored = sum(o.type.nbytes() for o, u in zip(node.outputs, uniform) if u is None)
        why = budget.refuses(stored - _freed_bytes(rw, node, params)) if stored else None
        if why:
            rw.remark("missed", why, node)
            return None
        return rw.replace(node, [_materialize(rw, node, o, arr, u, params)
                                 for o, arr, u in zip(node.outputs, results, uniform)])
    return fold


def _materialize(rw: Rewriter, node: Node, out, arr: np.ndarray, uniform, params: dict):
    """The folded value: a constant node when uniform, else a new param named after its source."""
    if uniform is not None:
        rw.remark("applied", f"folded {node.op} into the constant {uniform!r} ({out.type})", node)
        return rw.op("constant", loc=node.loc, value=uniform, dtype=out.dtype,
                     shape=tuple(out.shape) or None)
    source = _name_source(params)
    made: set = rw.state.setdefault("fold-constants", set())  # params made this sweep
    # A chain w -> transpose -> reshape folds one node at a time. When this node is the only
    # reader of a param folded just before, that param dies now: its name passes on, so the
    # chain ends as w.folded rather than w.folded3.
    if (source in made and source not in rw.outputs
            and all(u.name == node.name for u in rw.users.get(source, ()))):
        rw.remove_param(source)
        name = source
    else:
        name = re.sub(r"\.folded\d*$", "", source) + FOLDED if source else "folded"
    arr = np.array(arr)  # own it: jax buffers may be shared
    value = rw.add_param(arr, name)
    made.add(value.name)
    rw.remark("applied", f"folded {node.op} into @{value.name} ({out.type})", node)
    return value


@register_pass("fold-constants", options=[
    Option("max_bytes", int, 64 << 20, "largest result (bytes) to materialize as a param",
           range=(0, None))])
def fold_constants(graph: Graph, ctx: PassContext, max_bytes: int = 64 << 20) -> Graph:
    """Evaluate nodes whose inputs are all params or constants; keep the results as params."""
    planned, refused = plan_folds(graph, max_bytes)
    evaluated = evaluate_foldable(graph, ctx, planned)
    return apply_patterns(graph, [_fold_pattern(max_bytes, evaluated, refused, Budget(graph.params))],
                          ctx)
