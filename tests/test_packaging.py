"""Every sub-package and data file of the source tree is part of the installed package."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {"tensorsmith"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in ("tests", "benchmarks", "build") or \
                any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            continue
        if rel.parts:
            found.add("tensorsmith." + ".".join(rel.parts))
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"


def test_bundled_example_data_is_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["tensorsmith.examples"]
    data = {p.name for g in globs for p in (ROOT / "examples").glob(g)}
    assert {"weights.npz", "test.npz"} <= data



# Runs with every module of an undeclared distribution blocked, as in an environment made
# by `pip install .` alone: optional imports (cloudpickle, pygments...) fall back as they
# would there, a needed one (flatbuffers before it was declared) fails the export.
_EXPORT_AND_LOAD = """
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv[2]))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not a core dependency)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import numpy as np, tensorsmith, tensorsmith.examples as ex
m = ex.load("digits-cnn")
cm = tensorsmith.compile(m.fn, *m.example_inputs, params=m.params, passes=[])
cm.export(sys.argv[1])
out = np.asarray(tensorsmith.load(sys.argv[1])(*m.example_inputs))
assert np.allclose(out, np.asarray(cm(*m.example_inputs)), atol=1e-5)
print(" ".join(sorted({k.split(".")[0] for k in sys.modules})))
"""


def _core_closure() -> set[str]:
    """Normalised names of the distributions a plain `pip install .` brings in."""
    import importlib.metadata as md
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    todo = [Requirement(r) for r in cfg["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(Requirement(r) for r in (md.requires(req.name) or []))
        except md.PackageNotFoundError:
            pass
    return seen


def test_export_and_load_need_only_core_dependencies(tmp_path):
    """jax.export serialization needs flatbuffers, which only came with onnxruntime (a test
    extra), so `pip install -e . && tensorsmith compile` failed while the tests passed.
    Export and reload with every undeclared distribution's modules blocked."""
    import importlib.metadata as md
    import json
    import subprocess
    import sys
    from packaging.utils import canonicalize_name

    closure = _core_closure() | {"tensorsmith"}
    blocked = sorted(m for m, dists in md.packages_distributions().items()
                     if m not in sys.stdlib_module_names
                     and not {canonicalize_name(d) for d in dists} & closure)
    assert "onnxruntime" in blocked and "numpy" not in blocked
    r = subprocess.run([sys.executable, "-c", _EXPORT_AND_LOAD, str(tmp_path / "m.tsx"),
                        json.dumps(blocked)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"export/load failed with only core dependencies:\n{r.stderr[-3000:]}"
    assert "flatbuffers" in r.stdout.split()  # the export path really reached serialization
