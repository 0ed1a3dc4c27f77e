"""Test-wide set-up: the suite never writes to the user's real compilation cache."""
from __future__ import annotations

import os
import shutil
import tempfile

_made: list[str] = []


def pytest_configure(config):
    # Before any test imports tensorsmith's cache set-up (it reads this at the first compile,
    # and subprocesses inherit it): a per-run folder unless the caller chose one (or "0").
    if "TENSORSMITH_COMPILE_CACHE" not in os.environ:
        folder = tempfile.mkdtemp(prefix="tensorsmith-test-xla-")
        os.chmod(folder, 0o700)
        os.environ["TENSORSMITH_COMPILE_CACHE"] = folder
        _made.append(folder)


def pytest_unconfigure(config):
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)
