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
