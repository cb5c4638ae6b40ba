"""PyTorch CPU SDPA peer for examples/flash_bench.rs: same shapes, same FLOP convention
(GUIDE.md §4: fwd 4*B*H*Sq*Sk*D, halved when causal; bwd 2.5x fwd), medians of N runs.

Usage: LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
       /work/pyenv/bin/python torch_sdpa_bench.py [--threads 2] [--reps 10] [--mode fwd|fwdbwd]
       [--causal true|false|both] [--shape B,H,S,D] [--cpu]
Prints one line per case: `torch <shape> causal=<b> <mode> median_ms=<t> gflops=<g>`.
"""
import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [(4, 8, 1024, 64), (1, 16, 2048, 64), (2, 8, 1024, 128)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--mode", default="both")
    ap.add_argument("--shape", default=None, help="B,H,S,D (default: the three issue shapes)")
    ap.add_argument("--causal", default="both")
    ap.add_argument("--cpu", action="store_true", help="CPU seconds of the process instead of wall-clock")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = SHAPES if a.shape is None else [tuple(int(x) for x in a.shape.split(","))]
    modes = ["fwd", "fwdbwd"] if a.mode == "both" else [a.mode]
    causals = [False, True] if a.causal == "both" else [a.causal == "true"]
    for (b, h, s, d) in shapes:
        for causal in causals:
            for mode in modes:
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
                flops = 4.0 * b * h * s * s * d / (2 if causal else 1)
                if mode == "fwdbwd":
                    flops *= 3.5
                    q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
                    dout = torch.randn(b, h, s, d, generator=g)

                def run():
                    if mode == "fwd":
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    else:
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        torch.autograd.grad(o, (q, k, v), dout)

                for _ in range(2):
                    run()
                clock = time.process_time if a.cpu else time.perf_counter
                ts = []
                for _ in range(a.reps):
                    t0 = clock()
                    run()
                    ts.append(clock() - t0)
                ts.sort()
                med = ts[len(ts) // 2]
                print(f"torch {b},{h},{s},{d} causal={str(causal).lower()} {mode} "
                      f"median_ms={med * 1e3:.2f} gflops={flops / med / 1e9:.1f}", flush=True)


if __name__ == "__main__":
    main()
