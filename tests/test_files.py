"""Files tensorsmith reads and writes (issue 15): weights are checked, never reinterpreted;
every damaged or foreign file is a LoadError naming it; writes respect modes and never
remove what tensorsmith did not write; user graphs are verified before the pipeline."""
from __future__ import annotations

import io
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest

import tensorsmith as ts
from tensorsmith import ir
from tensorsmith.errors import LoadError, TensorsmithError, VerifyError
from tensorsmith.ir import parse
from tensorsmith.ir.serialize import atomic_write, pack_arrays, weights_path

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"


def _graph(dtype="f32", shape=(2,), value=None) -> ir.Graph:
    dims = ",".join(map(str, shape))
    w = np.asarray(value if value is not None else np.arange(np.prod(shape)).reshape(shape),
                   dtype=ir.numpy_dtype(dtype))
    return parse(f"""graph @m(%x: {dtype}[{dims}]) {{
  param @w: {dtype}[{dims}]
  %y: {dtype}[{dims}] = add(%x, @w)
  return %y
}}
""", {"w": w})


def _rewrite_npz(path: Path, replace: dict) -> None:
    """Rewrite an npz with some entries replaced (raw arrays, as a tampered file would)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(replace)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


# --- weights are checked against their declaration ---------------------------------------
@pytest.mark.parametrize("stored", [np.zeros(2, np.float64), np.zeros(4, np.float32),
                                    np.zeros((1, 2), np.float32), np.zeros(2, np.int32),
                                    np.zeros(8, np.uint8)])
def test_ir_load_refuses_weights_of_another_type(tmp_path, stored):
    p = ir.save(_graph(), tmp_path / "m.tsir")
    _rewrite_npz(weights_path(p), {"p0": stored})
    with pytest.raises(LoadError) as e:
        ir.load(p)
    msg = str(e.value)
    assert str(weights_path(p)) in msg and "@w" in msg and "f32[2]" in msg
    assert f"{stored.dtype.name}[{','.join(map(str, stored.shape))}]" in msg


@pytest.mark.parametrize("stored", [np.zeros(3, np.uint8), np.zeros(6, np.uint8),
                                    np.zeros(2, np.uint16), np.zeros(3, np.float16)])
def test_low_precision_raw_bits_need_the_exact_byte_count(tmp_path, stored):
    g = _graph("bf16", (3,), [1.0, 2.0, 3.0])
    p = ir.save(g, tmp_path / "m.tsir")
    assert ir.load(p).params["w"].dtype == ml_dtypes.bfloat16  # the honest file loads
    _rewrite_npz(weights_path(p), {"p0": stored})
    with pytest.raises(LoadError, match=r"@w is declared bf16\[3\] \(stored as its raw bits, "
                                        r"uint16\[3\]\)"):
        ir.load(p)


def test_export_refuses_weights_of_another_type(tmp_path):
    cm = ts.compile(_graph())
    art = cm.export(tmp_path / "m.tsx")
    _rewrite_npz(art, {"p3": np.zeros(2, np.float64)})
    with pytest.raises(LoadError, match=r"param @w is declared f32\[2\] but the file holds "
                                        r"float64\[2\]") as e:
        ts.load(art)
    assert str(art) in str(e.value)


def test_zero_d_params_survive_save_and_export(tmp_path):
    g = parse("""graph @m(%x: f32[3]) {
  param @eps: f32[]
  %y: f32[3] = add(%x, @eps)
  return %y
}
""", {"eps": np.float32(0.25)})
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert ir.load(ir.save(g, tmp_path / "m.tsir")).params["eps"].shape == ()
    loaded = ts.load(ts.compile(g).export(tmp_path / "m.tsx"))
    assert loaded.graph.params["eps"].shape == ()
    np.testing.assert_array_equal(np.asarray(loaded(x)[0]), x + np.float32(0.25))


# --- damaged and foreign files are one error type, naming the file -------------------------
def _export(tmp_path) -> Path:
    return ts.compile(_graph()).export(tmp_path / "m.tsx")


def _damage_truncate(p):
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _damage_meta(p):
    _rewrite_npz(p, {"p1": np.frombuffer(b'{"format": ', np.uint8)})


def _damage_meta_type(p):
    _rewrite_npz(p, {"p1": np.frombuffer(b"[1, 2]", np.uint8)})


def _damage_text(p):
    _rewrite_npz(p, {"p2": np.frombuffer(b"graph @m(\xff\xfe", np.uint8)})


def _damage_module(p):
    _rewrite_npz(p, {"p0": np.frombuffer(b"\x00" * 64, np.uint8)})


def _damage_count(p):
    _rewrite_npz(p, {"p4": np.zeros(2, np.float32)})


def _damage_crc(p):
    data = bytearray(p.read_bytes())
    i = data.index(b"format")  # a byte inside the JSON metadata: only the zip CRC sees it
    data[i] ^= 0x20
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_meta, _damage_meta_type,
                                    _damage_text, _damage_module, _damage_count, _damage_crc])
def test_damaged_export_is_a_load_error(tmp_path, damage):
    art = _export(tmp_path)
    damage(art)
    with pytest.raises(LoadError) as e:
        ts.load(art)
    assert str(art) in str(e.value)


def test_loading_an_onnx_file_says_to_compile_it():
    with pytest.raises(LoadError, match="not a tensorsmith export") as e:
        ts.load(LIGHT)
    assert f"tensorsmith.compile({str(LIGHT)!r})" in str(e.value)
    assert "pickle" not in str(e.value)


def test_missing_files_are_load_errors(tmp_path):
    with pytest.raises(LoadError, match="no exported model at"):
        ts.load(tmp_path / "none.tsx")
    with pytest.raises(LoadError, match="no IR file at"):
        ir.load(tmp_path / "none.tsir")
    p = ir.save(_graph(), tmp_path / "m.tsir")
    weights_path(p).unlink()
    with pytest.raises(LoadError, match="weights file .* is missing"):
        ir.load(p)


@pytest.mark.parametrize("text,npz", [(b"graph @m(\xff", None), (None, b"PK\x03\x04junk"),
                                      (None, b""), (b"graph @m(%x: f32[2]) {\n", None)])
def test_damaged_ir_files_are_load_errors(tmp_path, text, npz):
    p = ir.save(_graph(), tmp_path / "m.tsir")
    if text is not None:
        p.write_bytes(text)
    if npz is not None:
        weights_path(p).write_bytes(npz)
    with pytest.raises(LoadError) as e:
        ir.load(p)
    assert str(p if text is not None else weights_path(p)) in str(e.value)


# --- writing -------------------------------------------------------------------------------
def test_write_errors_name_the_target_not_the_temp_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(TensorsmithError) as e:
        atomic_write(target, b"data")
    assert isinstance(e.value, OSError)
    assert str(target) in str(e.value) and ".tmp" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temp file left


def test_atomic_write_respects_umask_and_existing_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.bin", b"a")
    finally:
        os.umask(old)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o600)
    atomic_write(kept, b"new")
    assert kept.read_bytes() == b"new" and kept.stat().st_mode & 0o777 == 0o600


def test_dump_ir_never_removes_or_overwrites_user_files(tmp_path):
    d = tmp_path / "ir"
    d.mkdir()
    mine = {"2024-results.npz": b"results", "01-notes.tsir": b"notes"}
    for name, data in mine.items():
        (d / name).write_bytes(data)
    cm = ts.compile(_graph(), passes="canonicalize")
    cm.dump_ir(d)
    cm.dump_ir(d)  # a second run replaces its own dumps
    assert {n: (d / n).read_bytes() for n in mine} == mine
    (d / "00-source.tsir").unlink()
    (d / "00-source.tsir").write_bytes(b"a user file with a dump's name")
    os.unlink(d / ".tensorsmith-dumps.json")
    with pytest.raises(TensorsmithError, match="00-source.tsir.*did not write"):
        cm.dump_ir(d)
    assert (d / "00-source.tsir").read_bytes() == b"a user file with a dump's name"


# --- user graphs are verified before the pipeline -----------------------------------------
@pytest.mark.parametrize("passes", [None, "canonicalize,dce"])
def test_compile_verifies_the_input_graph(tmp_path, passes):
    bad = parse("""graph @m(%x: f32[2]) {
  %y: f32[3] = relu(%x)
  return %y
}
""")
    with pytest.raises(VerifyError, match=r"the input graph @m is not valid IR: .*%y.*f32\[3\]"):
        ts.compile(bad, passes=passes)
    p = tmp_path / "bad.tsir"
    p.write_text(bad.to_text())
    with pytest.raises(VerifyError, match="the input graph in .*bad.tsir"):
        ts.compile(str(p), passes=passes)
