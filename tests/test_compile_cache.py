"""JAX's persistent compilation cache: on by default in a user folder, opt-out, never clobbering
the user's own JAX setting, and never the real home folder during the tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tensorsmith.codegen import compile_cache

ROOT = Path(__file__).resolve().parents[1]

# One fresh process: compile and call a model that takes over the (lowered) write threshold;
# report where the cache went and how many persistent-cache hits and writes JAX counted.
CHILD = r"""
import json, sys, jax, numpy as np
events = []
jax.monitoring.register_event_listener(lambda e, **kw: events.append(e))
import tensorsmith
from tensorsmith.codegen.compile_cache import cache_status
def f(x):
    for _ in range(4):
        x = jax.numpy.tanh(x @ x.T) + x
    return x
x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
y = np.asarray(tensorsmith.compile(f, x)(x))
np.testing.assert_allclose(y, np.asarray(jax.jit(f)(x)), rtol=1e-5, atol=1e-5)
folder, why = cache_status()
print(json.dumps({"dir": folder and str(folder), "why": why,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _child(env: dict, threshold: str | None = "0") -> dict:
    full = {k: v for k, v in os.environ.items()
            if k not in ("TENSORSMITH_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
    if threshold is not None:  # write even this small program (JAX's default is 1 s)
        full["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = threshold
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT.parent), full.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", CHILD], env=full, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _entries(folder: Path) -> list[Path]:
    """The cached executables (not the folder's lock file)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")] \
        if folder.exists() else []


def test_a_second_process_reads_the_first_ones_executables(tmp_path):
    folder = tmp_path / "xla"
    first = _child({"TENSORSMITH_COMPILE_CACHE": str(folder)})
    assert first["dir"] == str(folder) and first["hits"] == 0 and first["misses"] >= 1
    written = _entries(folder)
    assert written
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)  # cached code: user-only folder
    second = _child({"TENSORSMITH_COMPILE_CACHE": str(folder)})
    assert second["hits"] >= 1 and second["misses"] == 0
    assert len(_entries(folder)) == len(written)


def test_default_folder_is_the_user_cache_and_small_programs_are_not_written(tmp_path):
    home = tmp_path / "home"
    out = _child({"HOME": str(home)}, threshold=None)  # JAX's own 1 s threshold
    assert out["dir"] == str(home / ".cache" / "tensorsmith" / "xla") and out["why"] == "default"
    assert (home / ".cache" / "tensorsmith" / "xla").is_dir()
    assert _entries(home / ".cache" / "tensorsmith" / "xla") == []  # compiled in well under 1 s
    out = _child({"HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert out["dir"] == str(tmp_path / "xdg" / "tensorsmith" / "xla")
    assert _entries(tmp_path / "xdg" / "tensorsmith" / "xla")


def test_opt_out_and_the_users_own_jax_setting(tmp_path):
    off = _child({"TENSORSMITH_COMPILE_CACHE": "0", "HOME": str(tmp_path / "home")})
    assert off["dir"] is None and off["why"] == "off: TENSORSMITH_COMPILE_CACHE=0"
    assert off["hits"] == 0 and not (tmp_path / "home").exists()
    mine = tmp_path / "mine"
    out = _child({"JAX_COMPILATION_CACHE_DIR": str(mine),
                  "TENSORSMITH_COMPILE_CACHE": str(tmp_path / "ours")})
    assert out["dir"] == str(mine) and out["why"] == "the user's jax_compilation_cache_dir"
    assert _entries(mine) and not (tmp_path / "ours").exists()


def test_a_folder_others_can_write_is_not_used(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    monkeypatch.setenv("TENSORSMITH_COMPILE_CACHE", str(folder))
    # a process whose JAX has no cache configured yet, and whose config must not change
    config = SimpleNamespace(jax_compilation_cache_dir=None, jax_enable_compilation_cache=True,
                             jax_compilation_cache_max_size=-1, update=_refuse_update)
    monkeypatch.setattr(compile_cache, "jax", SimpleNamespace(config=config))
    assert compile_cache._decide() == (None, f"off: {folder} is writable by others or not owned "
                                             "by this user")
    folder.chmod(0o700)
    with pytest.raises(AssertionError, match="jax_compilation_cache_max_size"):
        compile_cache._decide()  # a folder of its own: it would be configured


def _refuse_update(*args):
    raise AssertionError(f"the process-wide JAX config must not change here: {args}")


def test_this_test_run_never_uses_the_real_home_cache():
    folder, _ = compile_cache.cache_status()
    real = compile_cache.default_dir()
    assert folder is None or real not in (folder, *folder.parents) and folder != real
    assert os.environ.get("TENSORSMITH_COMPILE_CACHE")  # set by tests/conftest.py
