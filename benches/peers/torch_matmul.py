#!/usr/bin/env python3
"""PyTorch's square matrix multiply on the CPU, the peer of benches/benches/matmul.rs's
`matmul_square_bf16` group: median GFLOP/s (2 n^3 flops) over --iters runs after --warmup.

    python3 benches/peers/torch_matmul.py --threads 2 --dtype bf16 --n 512,1024,2048
"""
import argparse
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    p.add_argument("--n", default="512,1024,2048")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    for n in map(int, a.n.split(",")):
        x = torch.randn(n, n).to(dtype)
        y = torch.randn(n, n).to(dtype)
        for _ in range(a.warmup):
            x @ y
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"torch {torch.__version__} {a.dtype} n={n} threads={a.threads}: {med * 1e3:.2f} ms, {2 * n**3 / med / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
