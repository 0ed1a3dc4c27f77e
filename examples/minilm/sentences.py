"""English text offline, from the Python standard library: held-out prose sentences from the
docstrings of some modules, training sentences from others, and a larger unlabelled corpus
(docstrings and comments of every other module, read from source) for distillation."""
from __future__ import annotations

import ast
import importlib
import inspect
import io
import os
import re
import sysconfig
import tokenize

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


# Source folders never read for the unlabelled corpus: tests (they quote other modules' text),
# and tools shipped beside the library.
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "__pycache__", "idlelib",
                        "lib2to3", "tkinter", "turtledemo", "ensurepip", "venv", "distutils"})


def _loose(text: str):
    """Sentences of 5-48 words, mostly letters: prose or not, enough to distil on."""
    for para in re.split(r"\n\s*\n", text):
        for s in _SPLIT.split(" ".join(para.split())):
            if 5 <= len(s.split()) <= 48 and s.isascii() and sum(c.isalpha() for c in s) >= 0.6 * len(s):
                yield s


def _held_out_root(module: str) -> bool:
    """``module`` belongs to a held-out module's package, or is its pure-Python twin."""
    top = module.split(".")[0]
    return any(top in (r, "_" + r, "_py" + r) for r in {h.split(".")[0] for h in HELD_OUT_MODULES})


def _source_texts(path: str):
    """Docstrings and comment blocks of one source file, parsed (never imported or run)."""
    try:
        src = open(path, encoding="utf-8").read()
        tree = ast.parse(src)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield ast.get_docstring(node) or ""
    block, last = [], -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                if tok.start[0] != last + 1 and block:
                    yield " ".join(block)
                    block = []
                block.append(tok.string.lstrip("#").strip())
                last = tok.start[0]
    except (tokenize.TokenError, SyntaxError):
        pass
    if block:
        yield " ".join(block)


def unlabelled(limit: int | None = None) -> list[str]:
    """Sentences of the standard library's source outside the held-out modules' packages:
    docstrings and comments, read with ``ast``/``tokenize`` (nothing is imported), prose or
    not, none equal to a held-out sentence. Stable for one Python version; ~15,000 on 3.11."""
    lib = sysconfig.get_paths()["stdlib"]
    files = []
    for root, dirs, names in os.walk(lib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    seen, out = set(held_out()), []
    for path in sorted(files):
        rel = os.path.relpath(path, lib)[:-3].replace(os.sep, ".")
        if _held_out_root(rel.removesuffix(".__init__")):
            continue
        for text in _source_texts(path):
            for s in _loose(text):
                if s not in seen:
                    seen.add(s)
                    out.append(s)
                    if limit and len(out) >= limit:
                        return out
    return out
