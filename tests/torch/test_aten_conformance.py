"""Op-level conformance: every ATen converter against torch eager on random inputs.

The cases (``aten_cases.py``) run in groups, one module per group; each output is compared
with torch's own, in torch's dtype. A second test checks that the cases reach every
converter in the table, so a converter without a case fails here.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import tensorsmith
from tensorsmith.frontends.torch import CONVERTERS, coverage, export_module, import_torch

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from aten_cases import GROUPS, Cases, group_inputs  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)

_TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def _compare(name: str, ref, out) -> list[str]:
    """Mismatches of one case: dtype, shape, values (float: relative to the largest value)."""
    refs = ref if isinstance(ref, tuple) else (ref,)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(refs) != len(outs):
        return [f"{name}: {len(outs)} outputs, torch has {len(refs)}"]
    bad = []
    for k, (r, o) in enumerate(zip(refs, outs)):
        o = np.asarray(o)
        want = str(r.dtype).removeprefix("torch.")
        if o.dtype.name != want:
            bad.append(f"{name}[{k}]: dtype {o.dtype.name}, torch {want}")
            continue
        r = r.float().numpy() if r.dtype == torch.bfloat16 else r.numpy()
        if o.shape != r.shape:
            bad.append(f"{name}[{k}]: shape {o.shape}, torch {r.shape}")
            continue
        o64, r64 = o.astype(np.float64), r.astype(np.float64)
        if r.dtype.kind in "biu":
            if not np.array_equal(o64, r64):
                bad.append(f"{name}[{k}]: {o.tolist()} != torch {r.tolist()}")
            continue
        tol = _TOL.get(refs[k].dtype, 1e-5) * max(1.0, float(np.max(np.abs(r64), initial=0)))
        err = float(np.max(np.abs(o64 - r64), initial=0))
        if not err <= tol:
            bad.append(f"{name}[{k}]: max abs error {err:.3g} > {tol:.3g}")
    return bad


_PROGRAMS: dict = {}  # group -> its decomposed program (exported once, read by the coverage test)


@pytest.mark.parametrize("group", list(GROUPS))
def test_converters_match_torch_eager(group):
    cases = GROUPS[group]
    module, xs = Cases(cases), group_inputs(cases)
    before = [x.clone() for x in xs]
    imported = import_torch(module, *xs)
    _PROGRAMS[group] = imported.program
    cm = tensorsmith.compile(imported.graph, passes="none")
    with torch.no_grad():
        ref = module(*xs)
    flat = list(cm(*tensorsmith.api._numpy_args(xs)))
    out = []
    for r in ref:  # regroup the flat outputs per case
        n = len(r) if isinstance(r, tuple) else 1
        out.append(tuple(flat[:n]) if isinstance(r, tuple) else flat[0])
        flat = flat[n:]
    assert all(torch.equal(x, b) for x, b in zip(xs, before))  # inputs untouched
    bad = [m for name, r, o in zip(module.names, ref, out) for m in _compare(name, r, o)]
    assert not bad, "\n".join(bad)


def test_every_converter_has_a_case():
    """The cases reach each converter (after Core ATen decomposition), so each is tested."""
    reached = set()
    for group, cases in GROUPS.items():
        program = _PROGRAMS.get(group) or export_module(Cases(cases), group_inputs(cases))
        reached |= {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert sorted(set(CONVERTERS) - reached) == []


def test_core_aten_coverage_figure():
    """The README figure: converted Core ATen overloads (torch.Tag.core) of all of them."""
    c = coverage()
    assert c["core"] >= 180 and c["converted"] + len(c["missing"]) == c["core"]
    for op in ("aten.convolution.default", "aten.addmm.default", "aten.native_layer_norm.default",
               "aten._native_batch_norm_legit_no_training.default", "aten.index.Tensor",
               "aten.sym_size.int"):
        assert op not in c["missing"]
    print(f"Core ATen ops converted: {c['converted']} of {c['core']}")
