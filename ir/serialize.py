"""Save and load graphs: IR text plus an npz of weights (no pickle)."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from .graph import Graph
from .parser import ParseError, parse
from .types import numpy_dtype


def weights_path(path) -> Path:
    """Where the weights of the graph saved at ``path`` live: the same name with .npz."""
    p = Path(path)
    return p.with_name(p.name + ".npz") if p.suffix in ("", ".npz") else p.with_suffix(".npz")


def atomic_write(path, data: bytes) -> None:
    """Write bytes to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pack_arrays(arrays: list[np.ndarray]) -> bytes:
    """An npz (uncompressed) of arrays in order; exotic dtypes are stored as their raw bits."""
    buf = io.BytesIO()
    stored = {}
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # ascontiguousarray makes 0-d 1-d
        if a.dtype.kind == "V" or a.dtype.type.__module__.startswith("ml_dtypes"):
            a = a.view(f"u{a.dtype.itemsize}")  # bf16 / float8 / int4: keep the bits
        stored[f"p{i}"] = a
    np.savez(buf, **stored)
    return buf.getvalue()


def unpack_arrays(data, dtypes: list[str], what: str) -> list[np.ndarray]:
    """Arrays written by pack_arrays, viewed back as the declared IR element types."""
    try:
        with np.load(data if not isinstance(data, bytes) else io.BytesIO(data),
                     allow_pickle=False) as z:
            if len(z.files) != len(dtypes):
                raise ValueError(f"{what}: holds {len(z.files)} arrays, the graph declares "
                                 f"{len(dtypes)} params")
            out = []
            for i, dt in enumerate(dtypes):
                a = z[f"p{i}"]
                want = numpy_dtype(dt)
                out.append(a if a.dtype == want else a.view(want))
            return out
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"cannot read weights {what}: {e}") from None


def save(g: Graph, path) -> Path:
    """Write ``g`` as IR text at ``path`` and its weights beside it (returns the text path)."""
    path = Path(path)
    atomic_write(weights_path(path), pack_arrays(list(g.params.values())))
    atomic_write(path, g.to_text().encode())
    return path


def load(path) -> Graph:
    """Read a graph written by ``save`` (weights are loaded when the .npz is present)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise FileNotFoundError(f"cannot read IR file {str(path)!r}: {e.strerror}") from None
    decl = parse(text)  # types and names of params first
    wp = weights_path(path)
    if not wp.exists():
        if decl.params:
            raise FileNotFoundError(f"{str(path)!r} declares {len(decl.params)} params but its "
                                    f"weights file {str(wp)!r} is missing")
        return decl
    names = list(decl.params)
    arrays = unpack_arrays(str(wp), [decl.param(n).dtype for n in names], repr(str(wp)))
    try:
        return parse(text, dict(zip(names, arrays)))
    except ParseError as e:
        raise ParseError(f"{path}: {e}") from None
