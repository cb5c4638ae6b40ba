#!/usr/bin/env python3
"""Writes crates/attention/tests/data/torch_cases.safetensors: attention reference cases
computed by PyTorch in float64 with explicit masks (docs/attention.md semantics), in the case-file
format of docs/attention.md.

Run from the repository root:  python benches/peers/make_attention_cases.py [--out FILE]

Semantics reproduced here, independently of the Rust code:
- causal and sliding windows are aligned bottom-right: query i sees key j iff
  i + kl - sq - left <= j <= i + kl - sq + right (causal: right = 0), where kl is the number
  of valid keys of the batch entry (seqlens_k[b] with key padding, else seq_k): a padded
  batch entry behaves like a shorter sequence, which is what Problem::key_range does;
- softcap c: score = c * tanh(scale * q.k / c);
- GQA/MQA: kv heads repeated, query head h reads kv head h // (heads_q // heads_kv);
- a query row with no visible key outputs 0, has lse = -inf and zero gradients.
Inputs are stored in their dtype (f32, f16, bf16); the reference is computed from exactly
those values in float64; expected tensors are stored as f32. Dropout is not covered (its
Philox stream is Attune's own convention).
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def visible(sq, sk, kl, causal, window):
    """Bool (sq, sk): which keys each query row sees, for kl valid keys."""
    i = torch.arange(sq)[:, None]
    j = torch.arange(sk)[None, :]
    diag = i + kl - sq
    vis = (j < kl).expand(sq, sk).clone()
    left, right = window if window is not None else (-1, -1)
    if causal:
        right = 0 if right < 0 else min(right, 0)
    if left >= 0:
        vis &= j >= diag - left
    if right >= 0:
        vis &= j <= diag + right
    return vis


def reference(q, k, v, dout, causal, window, softcap, scale, seqlens_k):
    """float64 forward (out, lse) and gradients (dq, dk, dv) by autograd."""
    q, k, v = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    b, hq, sq, _ = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    kr = k.repeat_interleave(hq // hkv, dim=1)
    vr = v.repeat_interleave(hq // hkv, dim=1)
    s = scale * (q @ kr.transpose(-1, -2))
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    lens = seqlens_k if seqlens_k is not None else [sk] * b
    vis = torch.stack([visible(sq, sk, int(kl), causal, window) for kl in lens])[:, None]  # (b,1,sq,sk)
    # Softmax with an explicit mask; the row max is detached (it cancels) and masked entries
    # are excluded before exp, so no inf/nan reaches autograd.
    m = torch.where(vis, s, torch.tensor(-math.inf, dtype=s.dtype)).amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.where(vis, torch.exp(torch.where(vis, s - m, torch.zeros_like(s))), torch.zeros_like(s))
    den = e.sum(-1, keepdim=True)
    p = e / torch.where(den > 0, den, torch.ones_like(den))
    lse = torch.where(den > 0, m + torch.log(torch.where(den > 0, den, torch.ones_like(den))),
                      torch.full_like(den, -math.inf)).squeeze(-1)
    out = p @ vr
    grads = None
    if dout is not None:
        out.backward(dout.double())
        grads = (q.grad, k.grad, v.grad)
    return out.detach(), lse.detach(), grads


# name, dtype, (batch, heads_q, heads_kv, seq_q, seq_k, head_dim), options
CASES = [
    ("01_basic_f32", "f32", (2, 2, 2, 17, 17, 32), {}),
    ("02_causal_square_f32", "f32", (1, 2, 2, 33, 33, 32), {"causal": True}),
    ("03_causal_sq_lt_sk_f32", "f32", (1, 2, 2, 7, 40, 16), {"causal": True}),
    ("04_causal_sq_gt_sk_masked_rows_f32", "f32", (1, 2, 2, 24, 9, 16), {"causal": True}),
    ("05_window_f32", "f32", (1, 2, 2, 40, 40, 16), {"window": [8, 3]}),
    ("06_window_causal_f32", "f32", (1, 2, 2, 29, 37, 16), {"causal": True, "window": [5, -1]}),
    ("07_window_right_only_f32", "f32", (1, 1, 1, 20, 31, 32), {"window": [-1, 2]}),
    ("08_softcap_f32", "f32", (1, 2, 2, 24, 24, 32), {"softcap": 5.0, "qmul": 4.0}),
    ("09_gqa_4to1_causal_f32", "f32", (1, 8, 2, 17, 23, 32), {"causal": True}),
    ("10_mqa_f32", "f32", (2, 4, 1, 13, 13, 64), {}),
    ("11_keypad_f32", "f32", (3, 2, 2, 11, 19, 16), {"seqlens_k": [19, 7, 0]}),
    ("12_keypad_causal_f32", "f32", (2, 2, 2, 12, 20, 16), {"causal": True, "seqlens_k": [20, 5]}),
    ("13_seq1_hdim8_f32", "f32", (2, 2, 2, 1, 1, 8), {}),
    ("14_decode_fwd_only_f32", "f32", (1, 4, 2, 1, 50, 64), {"causal": True, "fwd_only": True}),
    ("15_outliers_x20_f32", "f32", (1, 2, 2, 32, 32, 32), {"outliers": True}),
    ("16_hdim128_scale_f32", "f32", (1, 1, 1, 9, 15, 128), {"scale": 0.3}),
    ("17_hdim256_causal_f32", "f32", (1, 1, 1, 5, 7, 256), {"causal": True}),
    ("18_causal_gqa_f16", "f16", (1, 4, 2, 32, 32, 64), {"causal": True}),
    ("19_window_softcap_bf16", "bf16", (1, 2, 2, 40, 40, 32), {"window": [16, 0], "softcap": 20.0, "qmul": 3.0}),
    ("20_keypad_causal_mqa_f16", "f16", (2, 2, 1, 16, 24, 32), {"causal": True, "seqlens_k": [24, 10]}),
    ("21_outliers_x20_bf16", "bf16", (1, 2, 2, 24, 24, 64), {"outliers": True}),
]


def make(index, name, dtype, dims, opt):
    b, hq, hkv, sq, sk, d = dims
    g = torch.Generator().manual_seed(1000 + index)
    dt = DTYPES[dtype]
    q = torch.randn(b, hq, sq, d, generator=g) * opt.get("qmul", 1.0)
    if opt.get("outliers"):
        # Rows of large logits: every 5th query row (and the first) scaled by 20.
        q[:, :, ::5, :] *= 20.0
    k = torch.randn(b, hkv, sk, d, generator=g)
    v = torch.randn(b, hkv, sk, d, generator=g)
    dout = None if opt.get("fwd_only") else torch.randn(b, hq, sq, d, generator=g).to(dt)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    scale = opt.get("scale", 1.0 / math.sqrt(d))
    causal, window, softcap = opt.get("causal", False), opt.get("window"), opt.get("softcap")
    seqlens = opt.get("seqlens_k")
    out, lse, grads = reference(q, k, v, dout, causal, window, softcap, scale, seqlens)
    t = {f"{name}.q": q, f"{name}.k": k, f"{name}.v": v,
         f"{name}.out": out.float(), f"{name}.lse": lse.float()}
    if dout is not None:
        t[f"{name}.dout"] = dout
        for key, gr in zip(("dq", "dk", "dv"), grads):
            t[f"{name}.{key}"] = gr.float()
    if seqlens is not None:
        t[f"{name}.seqlens_k"] = torch.tensor(seqlens, dtype=torch.int32)
    meta = {"causal": causal, "scale": scale, "window": window, "softcap": softcap}
    return {key: val.contiguous() for key, val in t.items()}, json.dumps(meta)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(root, "crates/attention/tests/data/torch_cases.safetensors"))
    args = ap.parse_args()
    tensors, meta = {}, {}
    for i, (name, dtype, dims, opt) in enumerate(CASES):
        t, m = make(i, name, dtype, dims, opt)
        tensors.update(t)
        meta[name] = m
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {len(CASES)} cases to {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB), torch {torch.__version__}")


if __name__ == "__main__":
    main()
