"""JAX's persistent compilation cache, on by default in a user cache folder.

A second process that compiles the same program for the same backend reads XLA's executable
from disk instead of compiling again (ResNet-50's first call: seconds -> a fraction). Set up
once per process, lazily, at the first compile; left alone when the user configured JAX's
cache themselves (``jax_compilation_cache_dir`` / ``JAX_COMPILATION_CACHE_DIR``, or
``jax_enable_compilation_cache=False``).

``TENSORSMITH_COMPILE_CACHE``: unset -> ``$XDG_CACHE_HOME/tensorsmith/xla`` (or
``~/.cache/tensorsmith/xla``); ``0`` / ``off`` / ``false`` -> no persistent cache; any other
value -> that folder. Programs that compile in under a second are not written (JAX's
``jax_persistent_cache_min_compile_time_secs``, 1 s unless the user changed it): reading
them back would not save much.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import jax

ENV = "TENSORSMITH_COMPILE_CACHE"
MAX_BYTES = 2 << 30
"""The folder's bound (JAX evicts least recently used entries beyond it), unless the user set
``jax_compilation_cache_max_size``."""

_OFF = {"0", "off", "false", "no", ""}
_lock = threading.Lock()
_state: dict = {}  # "dir": the folder in use (None: off), "why": how it was decided


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/tensorsmith/xla``, or ``~/.cache/tensorsmith/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorsmith" / "xla"


def setup_compile_cache() -> Path | None:
    """Turn the persistent cache on (once per process); returns the folder in use, or None."""
    if "dir" in _state:
        return _state["dir"]
    with _lock:
        if "dir" not in _state:
            _state["dir"], _state["why"] = _decide()
    return _state["dir"]


def cache_status() -> tuple[Path | None, str]:
    """(folder in use or None, how that was decided); sets the cache up if not done yet."""
    setup_compile_cache()
    return _state["dir"], _state["why"]


def _decide() -> tuple[Path | None, str]:
    user_dir = jax.config.jax_compilation_cache_dir
    if not jax.config.jax_enable_compilation_cache:
        return None, "off: jax_enable_compilation_cache is False (the user's JAX setting)"
    if user_dir:  # the user's own JAX setting wins; tensorsmith changes nothing
        return Path(user_dir), "the user's jax_compilation_cache_dir"
    raw = os.environ.get(ENV)
    if raw is not None and raw.strip().lower() in _OFF:
        return None, f"off: {ENV}={raw}"
    folder = Path(raw).expanduser() if raw is not None else default_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds code: user-only
    except OSError as e:
        return None, f"off: cannot create {folder}: {e.strerror or e}"
    # Cached executables run as code: a folder that others can write is not trusted.
    st = folder.stat()
    if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
        return None, f"off: {folder} is writable by others or not owned by this user"
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    how = f"{ENV}={raw}" if raw is not None else "default"
    return folder, how


def _reset_for_tests() -> None:
    """Forget the decision (tests only: JAX keeps its own cache object per process)."""
    _state.clear()
