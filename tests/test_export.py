"""Export / load: fresh-process reload, export-only targets, symbolic batch, no mutation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from zoo import ZOO, call, fresh_inputs  # noqa: E402

import tensorsmith  # noqa: E402
from tensorsmith import ExportOnlyError  # noqa: E402


def _multi_output(p, x):
    h = x @ p["w"] + p["b"]
    return {"logits": h, "probs": jax.nn.softmax(h, axis=-1), "sum": h.sum(axis=1)}


def test_export_reloads_in_a_fresh_process(tmp_path):
    """A separate interpreter (nothing cached) loads the file and reproduces the outputs."""
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal((6, 4)).astype(np.float32),
         "b": rng.standard_normal(4).astype(np.float32)}
    x = rng.standard_normal((3, 6)).astype(np.float32)
    cm_multi = tensorsmith.compile(_multi_output, x, params=p, batch_dim=True)
    fn, params, args = ZOO["cnn"]()
    cm_cnn = tensorsmith.compile(fn, *args, params=params, batch_dim=True)
    cm_multi.export(tmp_path / "multi.tsm")
    cm_cnn.export(tmp_path / "cnn.tsm")
    inputs = {"multi_2": x[:2], "multi_5": rng.standard_normal((5, 6)).astype(np.float32),
              "cnn_1": fresh_inputs(args, 1)[0][:1], "cnn_3": np.concatenate(
                  [fresh_inputs(args, 2)[0], fresh_inputs(args, 3)[0][:1]])}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorsmith
        base = {str(tmp_path)!r}
        ins = np.load(base + "/inputs.npz")
        out, meta = {{}}, {{}}
        for model in ("multi", "cnn"):
            m = tensorsmith.load(base + "/" + model + ".tsm")
            meta[model] = list(m.platforms)
            for key in ins.files:
                if key.startswith(model):
                    res = m(ins[key])
                    if isinstance(res, dict):
                        meta[key] = sorted(res)
                        for k, v in res.items():
                            out[key + "/" + k] = np.asarray(v)
                    else:
                        out[key] = np.asarray(res)
        np.savez(base + "/outputs.npz", **out)
        print(json.dumps(meta))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["multi"] == ["cpu"] and meta["cnn"] == ["cpu"]
    outs = np.load(tmp_path / "outputs.npz")
    for key in ("multi_2", "multi_5"):
        assert meta[key] == ["logits", "probs", "sum"]  # the dict output survives
        want = cm_multi(inputs[key])
        for k in want:
            np.testing.assert_array_equal(outs[f"{key}/{k}"], np.asarray(want[k]))
    for key in ("cnn_1", "cnn_3"):
        np.testing.assert_array_equal(outs[key], np.asarray(cm_cnn(inputs[key])))
        np.testing.assert_allclose(outs[key], np.asarray(call(fn, params, inputs[key])),
                                   rtol=1e-5, atol=1e-5)


def test_exports_keep_the_symbolic_batch(tmp_path):
    fn, params, args = ZOO["transformer_block"]()
    cm = tensorsmith.compile(fn, *args, params=params, batch_dim=True)
    loaded = tensorsmith.load(cm.export(tmp_path / "tb.tsm"))
    assert loaded.meta["inputs"] == ["f32[N,8,16]"]
    assert loaded.graph.to_text() == cm.graph.to_text()
    for n in (1, 4):
        (x,) = fresh_inputs((np.zeros((n, 8, 16), np.float32),), seed=n)
        got = loaded(x)
        assert got.shape == (n, 8, 16)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(cm(x)))


@pytest.mark.parametrize("target, platform", [("tpu", "tpu"), ("gpu", "cuda")])
def test_target_without_hardware_is_export_only(tmp_path, target, platform):
    if tensorsmith.codegen.host_has(target):
        pytest.skip(f"this host has a {target}: the model runs instead of being export-only")
    fn, params, args = ZOO["mlp"]()
    cm = tensorsmith.compile(fn, *args, params=params, target=target, batch_dim=True)
    assert not cm.runnable and "export-only" in repr(cm)
    with pytest.raises(ExportOnlyError) as info:
        cm(*args)
    msg = str(info.value)
    assert "export-only" in msg and f"target={target!r}" in msg
    assert ".export(path)" in msg and "tensorsmith.load(path)" in msg and "target='cpu'" in msg
    with pytest.raises(ExportOnlyError, match=f"needs a {target} host"):
        cm.hlo()
    assert "stablehlo.dot_general" in cm.stablehlo()
    loaded = tensorsmith.load(cm.export(tmp_path / f"mlp_{target}.tsm"))
    assert platform in loaded.platforms and loaded.meta["target"] == target
    with pytest.raises(ExportOnlyError, match=f"exported for {platform}"):
        loaded(*args)


def test_inputs_and_params_are_not_mutated(tmp_path):
    fn, params, args = ZOO["digits"]()
    params_copy = jax.tree_util.tree_map(np.array, params)
    args_copy = tuple(np.array(a) for a in args)
    cm = tensorsmith.compile(fn, *args, params=params, batch_dim=True)
    out = np.asarray(cm(*args))
    cm.export(tmp_path / "d.tsm")
    tensorsmith.load(tmp_path / "d.tsm")(*args)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params_copy)
    for a, c in zip(args, args_copy):
        np.testing.assert_array_equal(a, c)
    # the compiled model owns its weights: the caller editing theirs changes nothing
    jax.tree_util.tree_leaves(params)[0][...] = 0.0
    np.testing.assert_array_equal(np.asarray(cm(*args)), out)
    for name, arr in cm.graph.params.items():
        assert not arr.flags.writeable, name


def test_load_rejects_non_exports(tmp_path):
    bogus = tmp_path / "bogus.tsm"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a tensorsmith export"):
        tensorsmith.load(bogus)
    with pytest.raises(FileNotFoundError, match="no exported model"):
        tensorsmith.load(tmp_path / "missing.tsm")
