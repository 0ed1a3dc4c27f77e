"""Fuzz: truncated and bit-flipped IR files, weights and exports (issue 15).

Every outcome is a successful load (then a compile and a call) or a TensorsmithError:
no other exception type, no crash, no hang. Seeded; ~20 s by default, longer under slow.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import tensorsmith as ts
from tensorsmith import ir
from tensorsmith.errors import TensorsmithError
from tensorsmith.ir.serialize import weights_path


def _model(p, x):
    h = jax.nn.softmax(x @ p["w"] + p["b"], axis=-1)
    return jax.nn.relu(h * p["eps"]).reshape(-1)


X = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
PARAMS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "b": np.ones(4, np.float32),
          "eps": np.float32(2.0)}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-originals")
    cm = ts.compile(_model, X, params=PARAMS)
    tsir = ir.save(cm.graph, d / "m.tsir")
    export = cm.export(d / "m.tsx")
    return {"tsir": tsir.read_bytes(), "npz": weights_path(tsir).read_bytes(),
            "export": export.read_bytes()}


_TEXT_CHARS = list('0123456789%@#{}()[],:=-"\\ \nfiub.xyzN_') + ["\u2028", "\x85", "\r"]


def _mutate_text(data: bytes, rng: np.random.Generator) -> bytes:
    """Edits that keep the text UTF-8, so they reach the parser, verifier and lowering."""
    text = list(data.decode())
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, len(text)))
        kind = rng.integers(0, 4)
        if kind == 0:
            text[i] = _TEXT_CHARS[int(rng.integers(0, len(_TEXT_CHARS)))]
        elif kind == 1:
            del text[i: i + int(rng.integers(1, 12))]
        elif kind == 2:
            j = int(rng.integers(0, len(text)))
            text[i:i] = text[j: j + int(rng.integers(1, 40))]
        else:
            text.insert(i, text[int(rng.integers(0, len(text)))])
    return "".join(text).encode("utf-8", "surrogatepass")


def _mutate(data: bytes, rng: np.random.Generator, text: bool = False) -> bytes:
    if text and rng.random() < 0.6:
        return _mutate_text(data, rng)
    if rng.random() < 0.3:
        return data[: int(rng.integers(0, len(data)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(out)))
        out[i] ^= int(rng.integers(1, 256))
    return bytes(out)


def _try_ir(folder: Path) -> str:
    g = ir.load(folder / "m.tsir")
    cm = ts.compile(g)
    if [str(v.type) for v in g.inputs] != ["f32[2,3]"]:
        return "compiled"  # checking call arguments against new inputs is not this test's job
    jax.block_until_ready(cm(X))
    return "ran"


def _try_export(folder: Path) -> str:
    m = ts.load(folder / "m.tsx")
    jax.block_until_ready(m(X))
    return "ran"


def _fuzz(originals, tmp_path, seconds: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    outcomes: dict[str, int] = {}
    start = time.monotonic()
    case = 0
    while time.monotonic() - start < seconds:
        case += 1
        folder = tmp_path / f"c{case}"
        folder.mkdir(parents=True)
        target = ("tsir", "npz", "export")[case % 3]
        files = dict(originals)
        files[target] = _mutate(files[target], rng, text=target == "tsir")
        (folder / "m.tsir").write_bytes(files["tsir"])
        (folder / "m.npz").write_bytes(files["npz"])
        (folder / "m.tsx").write_bytes(files["export"])
        try:
            outcome = (_try_export if target == "export" else _try_ir)(folder)
        except TensorsmithError as e:
            outcome = type(e).__name__
        except Exception as e:  # the bug this test exists to find
            shutil.copytree(folder, tmp_path / "failing", dirs_exist_ok=True)
            raise AssertionError(f"case {case} (seed {seed}, {target} mutated) raised "
                                 f"{type(e).__name__}: {e}; files in {tmp_path / 'failing'}") from e
        outcomes[f"{target}: {outcome}"] = outcomes.get(f"{target}: {outcome}", 0) + 1
        shutil.rmtree(folder)
    return outcomes


def test_fuzz_files(originals, tmp_path):
    outcomes = _fuzz(originals, tmp_path, seconds=20, seed=15)
    # the mutations must reach the readers: both refusals and clean loads occur
    assert any(k.startswith("export: ") and not k.endswith("ran") for k in outcomes), outcomes
    assert any(k.startswith("tsir: ") and not k.endswith("ran") for k in outcomes), outcomes
    assert sum(outcomes.values()) >= 30, outcomes


@pytest.mark.slow
def test_fuzz_files_long(originals, tmp_path):
    for seed in range(4):
        _fuzz(originals, tmp_path / f"s{seed}", seconds=60, seed=seed)
