#!/usr/bin/env python3
"""Times torch.nn.functional.scaled_dot_product_attention on the CPU: the peer of
`cargo xtask bench-attn`, with the same flags and, with --json, the same keys
(fwd_ms, fwd_gflops, and with --bwd fwdbwd_ms, fwdbwd_gflops, plus the shape).

FLOPs follow docs/benchmarks.md: forward 4*B*Hq*Sq*Sk*D, halved when causal; backward 2.5x forward,
so forward+backward counts 3.5x. Causal masks are aligned bottom-right as in Attune (for
seq_q != seq_k that is torch's causal_lower_right bias; for equal lengths is_causal=True).

  python benches/peers/torch_sdpa.py --shape 4,8,1024,64 --causal --bwd --threads 2 --json
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def parse_shape(s):
    try:
        v = [int(x) for x in s.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"shape '{s}': {e}")
    if len(v) != 4 or min(v) <= 0:
        raise argparse.ArgumentTypeError(f"shape '{s}' must be four positive integers B,H,S,D, e.g. 4,8,1024,64")
    return v


def fwd_flops(b, hq, sq, sk, d, causal):
    f = 4.0 * b * hq * sq * sk * d
    return f / 2 if causal else f


def median_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description="Time PyTorch SDPA on the CPU (peer of cargo xtask bench-attn).")
    ap.add_argument("--shape", type=parse_shape, required=True, help="B,H,S,D of q")
    ap.add_argument("--seq-k", type=int, help="key length (default: S)")
    ap.add_argument("--heads-kv", type=int, help="kv heads (default: H; fewer is GQA/MQA)")
    ap.add_argument("--causal", action="store_true", help="causal mask, aligned bottom-right")
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--bwd", action="store_true", help="also time forward+backward")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if a.iters < 10:
        ap.error(f"--iters {a.iters} is too few: report medians of at least 10 timed runs, docs/benchmarks.md")
    if a.threads:
        torch.set_num_threads(a.threads)
    b, hq, sq, d = a.shape
    sk = a.seq_k or sq
    hkv = a.heads_kv or hq
    if hq % hkv:
        ap.error(f"heads {hq} must be a multiple of --heads-kv {hkv}")
    dt = DTYPES[a.dtype]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, hq, sq, d, generator=g).to(dt)
    k = torch.randn(b, hkv, sk, d, generator=g).to(dt)
    v = torch.randn(b, hkv, sk, d, generator=g).to(dt)
    dout = torch.randn(b, hq, sq, d, generator=g).to(dt)
    kw = {"enable_gqa": hkv != hq}
    if a.causal and sq == sk:
        kw["is_causal"] = True
    elif a.causal:
        from torch.nn.attention.bias import causal_lower_right

        kw["attn_mask"] = causal_lower_right(sq, sk)

    def fwd():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, **kw)

    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def fwdbwd():
        out = F.scaled_dot_product_attention(qg, kg, vg, **kw)
        out.backward(dout)
        qg.grad = kg.grad = vg.grad = None

    flops = fwd_flops(b, hq, sq, sk, d, a.causal)
    res = {"impl": "torch_sdpa", "torch": torch.__version__, "batch": b, "heads_q": hq, "heads_kv": hkv,
           "seq_q": sq, "seq_k": sk, "head_dim": d, "causal": a.causal, "dtype": a.dtype,
           "threads": torch.get_num_threads(), "iters": a.iters}
    res["fwd_ms"] = median_ms(fwd, a.warmup, a.iters)
    res["fwd_gflops"] = flops / (res["fwd_ms"] * 1e6)
    if a.bwd:
        res["fwdbwd_ms"] = median_ms(fwdbwd, a.warmup, a.iters)
        res["fwdbwd_gflops"] = 3.5 * flops / (res["fwdbwd_ms"] * 1e6)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"torch {torch.__version__} SDPA {a.dtype}: b {b} hq {hq} hkv {hkv} sq {sq} sk {sk} d {d}"
              f"{' causal' if a.causal else ''}, {res['threads']} threads, median of {a.iters}")
        print(f"  forward          {res['fwd_ms']:10.3f} ms {res['fwd_gflops']:8.1f} GFLOP/s")
        if a.bwd:
            print(f"  forward+backward {res['fwdbwd_ms']:10.3f} ms {res['fwdbwd_gflops']:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
