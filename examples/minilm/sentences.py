"""Held-out English sentences, offline: prose sentences from Python standard library docstrings."""
from __future__ import annotations

import importlib
import inspect
import re

# Two disjoint groups of modules: sentences to fine-tune on, and held-out ones to evaluate on.
TRAIN_MODULES = ("collections", "functools", "itertools", "os", "pathlib", "shutil", "subprocess",
                 "threading", "queue", "socket", "email.message", "http.client", "urllib.request",
                 "logging", "argparse", "configparser", "csv", "json", "zipfile", "tarfile")
HELD_OUT_MODULES = ("asyncio.events", "asyncio.tasks", "decimal", "fractions", "statistics",
                    "random", "datetime", "calendar", "textwrap", "difflib", "string", "re",
                    "inspect", "typing", "dataclasses", "enum", "heapq", "bisect", "unittest.case",
                    "xml.etree.ElementTree", "ftplib", "smtplib", "imaplib", "tempfile", "glob")

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEY = re.compile(r"[=<>{}\[\]|\\`#@$]|\b\w+\(|\w+\.\w+\(|_\w|>>>|\.\.\.|\bNone\b|\bTrue\b|\bFalse\b")


def _docstrings(module_name: str):
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        return
    yield inspect.getdoc(mod) or ""
    for _, obj in sorted(vars(mod).items()):
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                for _, meth in sorted(vars(obj).items()):
                    if inspect.isfunction(meth):
                        yield inspect.getdoc(meth) or ""


def _sentences_of(doc: str):
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        for s in _SPLIT.split(text):
            words = s.split()
            if not 6 <= len(words) <= 40 or not s[0].isupper() or not s.endswith("."):
                continue
            if _CODEY.search(s) or not s.isascii() or sum(c.isalpha() for c in s) < 0.75 * len(s):
                continue
            yield s


def sentences(modules=HELD_OUT_MODULES, limit: int | None = None) -> list[str]:
    """Distinct prose sentences from the docstrings of ``modules``, in a stable order."""
    seen, out = set(), []
    for name in modules:
        for doc in _docstrings(name):
            for s in _sentences_of(doc):
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out[:limit] if limit else out


def held_out(limit: int | None = None) -> list[str]:
    """Sentences for evaluation (modules disjoint from ``training``)."""
    return sentences(HELD_OUT_MODULES, limit)


def training(limit: int | None = None) -> list[str]:
    """Sentences for fine-tuning or distillation."""
    seen = set(held_out())
    return [s for s in sentences(TRAIN_MODULES) if s not in seen][:limit] if limit else \
        [s for s in sentences(TRAIN_MODULES) if s not in seen]
