"""Save and load graphs: IR text plus an npz of weights (no pickle), checked on the way in."""
from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .graph import Graph
from .parser import ParseError, parse
from .types import TensorType, numpy_dtype
from ..errors import ExportError, LoadError


class FileLoadError(LoadError, ValueError):
    """A file tensorsmith reads is missing, corrupt, or not what its IR declares."""


class MissingFileError(FileLoadError, FileNotFoundError):
    """A file tensorsmith was asked to read does not exist."""


class FileWriteError(ExportError, OSError):
    """A file could not be written; names the target path (not the temporary file)."""


# What reading a damaged zip/npy can raise: zipfile, zlib, numpy's header parser and struct
# each report corruption with their own types. Each becomes a FileLoadError naming the file.
CORRUPT = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, OverflowError,
           RuntimeError, NotImplementedError, MemoryError, SyntaxError, struct.error, zlib.error,
           zipfile.BadZipFile, tokenize.TokenError)


def weights_path(path) -> Path:
    """Where the weights of the graph saved at ``path`` live: the same name with .npz."""
    p = Path(path)
    return p.with_name(p.name + ".npz") if p.suffix in ("", ".npz") else p.with_suffix(".npz")


def _umask() -> int:
    """The process umask: read from /proc where it can be (setting it races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, data: bytes) -> None:
    """Write bytes to ``path`` so that readers see the old file or the whole new one.

    A new file gets mode 0666 & ~umask (what ``open`` gives); a replaced file keeps its mode.
    Errors name ``path``, never the hidden temporary file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise FileWriteError(e.errno, f"cannot write {str(path)!r}: "
                                      f"{e.strerror or type(e).__name__}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def pack_arrays(arrays: list[np.ndarray]) -> bytes:
    """An npz (uncompressed) of arrays in order; exotic dtypes are stored as their raw bits."""
    buf = io.BytesIO()
    stored = {}
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # not ascontiguousarray: it turns a 0-d array into 1-d
            a = a.copy(order="C")
        if _raw_bits(a.dtype):
            a = a.view(f"u{a.dtype.itemsize}")  # bf16 / float8 / int4: keep the bits
        stored[f"p{i}"] = a
    np.savez(buf, **stored)
    return buf.getvalue()


def _raw_bits(dt: np.dtype) -> bool:
    return dt.kind == "V" or dt.type.__module__.startswith("ml_dtypes")


def _describe(dtype: np.dtype, shape) -> str:
    return f"{dtype.name}[{','.join(map(str, shape))}]"


@contextmanager
def open_npz(path, what: str):
    """An npz file opened as a zip; a missing, unreadable or non-zip file is a FileLoadError."""
    label = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise MissingFileError(f"no {what} at {label!r}") from None
    except CORRUPT as e:
        raise FileLoadError(f"{what} {label!r} is not readable as an npz archive: "
                            f"{type(e).__name__}: {e}") from None
    with zf:
        yield zf


def read_member(zf: zipfile.ZipFile, key: str, label: str, want: TensorType | None,
                param: str = "") -> np.ndarray:
    """Array ``key`` of an npz, checked against ``want`` before any data is read.

    ``want=None`` takes a 1-d u8 blob of any length (an export's module, metadata, IR text).
    """
    who = f"param @{param}" if param else f"entry {key!r}"
    try:
        info = zf.getinfo(key + ".npy")
    except KeyError:
        raise FileLoadError(f"{label!r} has no array for {who}") from None
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if dtype.hasobject:
                raise FileLoadError(f"{label!r}: {who} holds Python objects; only numeric "
                                    "arrays are read (no pickle)")
            arr_dtype = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
            _check(label, who, want, arr_dtype, shape)
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size - f.tell() != nbytes:  # before reading: bounded by the declaration
                raise FileLoadError(f"{label!r}: {who} should hold {nbytes} bytes of data, its "
                                    f"archive entry has {info.file_size - f.tell()}")
            data = f.read(nbytes + 1)  # to the end, so zipfile checks the CRC
    except FileLoadError:
        raise
    except CORRUPT as e:
        raise FileLoadError(f"{label!r} is corrupt ({who}): {type(e).__name__}: {e}") from None
    if len(data) != nbytes:
        raise FileLoadError(f"{label!r} is truncated ({who})")
    arr = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    if arr_dtype != dtype:
        arr = arr.astype(arr_dtype)
    if want is not None and arr.dtype != numpy_dtype(want.dtype):
        arr = arr.view(numpy_dtype(want.dtype))  # raw bits of bf16/float8/int4, sizes checked
    return arr


def _check(label: str, who: str, want: TensorType | None, dtype: np.dtype, shape) -> None:
    if want is None:
        if dtype != np.uint8 or len(shape) != 1:
            raise FileLoadError(f"{label!r}: {who} should be bytes (uint8[N]), the file holds "
                                f"{_describe(dtype, shape)}")
        return
    target = numpy_dtype(want.dtype)
    stored = np.dtype(f"u{target.itemsize}") if _raw_bits(target) else target
    if dtype != stored or tuple(shape) != tuple(want.shape):
        raw = f" (stored as its raw bits, {_describe(stored, want.shape)})" if _raw_bits(target) else ""
        raise FileLoadError(f"{label!r}: {who} is declared {want}{raw} but the file holds "
                            f"{_describe(dtype, shape)}; refusing to reinterpret it")


def unpack_arrays(path, types: list[TensorType | None], what: str = "weights file",
                  names: list[str] | None = None) -> list[np.ndarray]:
    """Arrays written by pack_arrays, each checked against its declared IR type."""
    label = str(path)
    names = names or [""] * len(types)
    with open_npz(path, what) as zf:
        try:
            count = len([n for n in zf.namelist() if n.endswith(".npy")])
        except CORRUPT as e:
            raise FileLoadError(f"{what} {label!r} is corrupt: {e}") from None
        if count != len(types):
            raise FileLoadError(f"{what} {label!r} holds {count} arrays, its IR declares "
                                f"{len(types)}")
        return [read_member(zf, f"p{i}", label, t, n)
                for i, (t, n) in enumerate(zip(types, names))]


def save(g: Graph, path) -> Path:
    """Write ``g`` as IR text at ``path`` and its weights beside it (returns the text path)."""
    path = Path(path)
    payloads = [a.array for a in g.annotations if a.array is not None]
    atomic_write(weights_path(path), pack_arrays(list(g.params.values()) + payloads))
    atomic_write(path, g.to_text().encode())
    return path


def read_text(path, what: str) -> str:
    """A UTF-8 text file; missing, unreadable or not UTF-8 is a FileLoadError naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"no {what} at {str(path)!r}") from None
    except OSError as e:
        raise FileLoadError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise FileLoadError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}: "
                            f"{e.reason})") from None


def parse_file_text(text: str, label: str, params: dict | None = None,
                    annotation_arrays: dict | None = None) -> Graph:
    """parse() whose errors name the file."""
    try:
        return parse(text, params, annotation_arrays)
    except ParseError as e:
        raise ParseError(f"{label}: {e}") from None
    except RecursionError:
        raise ParseError(f"{label}: regions nested too deeply") from None


def load(path) -> Graph:
    """Read a graph written by ``save`` (weights are loaded when the .npz is present)."""
    path = Path(path)
    text = read_text(path, "IR file")
    decl = parse_file_text(text, str(path))  # types and names of params first
    wp = weights_path(path)
    if not wp.exists():
        if decl.params:
            raise MissingFileError(f"{str(path)!r} declares {len(decl.params)} params but its "
                                   f"weights file {str(wp)!r} is missing")
        return decl
    names = list(decl.params)
    notes = [a for a in decl.annotations if a.array is not None]
    types_ = [decl.param(n).type for n in names] + [a.type for a in notes]
    labels = names + [f"annotation {a.kind} on {a.target}" for a in notes]
    arrays = unpack_arrays(wp, types_, "weights file", labels)
    payloads = {a.key: arr for a, arr in zip(notes, arrays[len(names):])}
    return parse_file_text(text, str(path), dict(zip(names, arrays[:len(names)])), payloads)
