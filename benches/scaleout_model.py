#!/usr/bin/env python3
"""A paper model of data-parallel scale-out (docs/distributed.md): NOT a measurement.

Given a measured single-process step time and the gradient volume, it predicts the step time
on N GPUs with a ring all-reduce under the alpha-beta model,

    t_allreduce(N) = 2 (N - 1) alpha + 2 (N - 1) / N * bytes / beta,

at published link figures, and the speed-up for a fixed global batch (strong scaling:
compute t1 / N) and a fixed per-rank batch (weak scaling: compute t1), each without overlap of
communication and backward (the way Attune reduces today: after the backward pass) and with
perfect overlap (PyTorch DDP's bucketed overlap at its best). The last column is the
single-process step time below which, without overlap, N ranks reach less than half of the
ideal N-fold speed-up for a fixed global batch (N x t_allreduce): a GPU step shorter than that
is communication-bound.

    python3 benches/scaleout_model.py --step-ms 85 --params 437888 [--step-ms ... --params ...]
"""
import argparse

# Published per-GPU link figures (one direction), and a per-hop latency of the order NCCL
# reports. NVLink 4 on H100 SXM: 900 GB/s bidirectional per GPU; InfiniBand NDR: 400 Gb/s per
# NIC, one NIC per GPU on a DGX H100.
LINKS = {
    "NVLink 4 (8 GPUs, one node)": (8, 450e9, 3e-6),
    "InfiniBand NDR 400 Gb/s (64 GPUs, 8 nodes)": (64, 50e9, 5e-6),
}


def allreduce_s(n, nbytes, beta, alpha):
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / beta


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step-ms", type=float, action="append", required=True, help="measured 1-process step (ms)")
    p.add_argument("--params", type=int, action="append", required=True, help="trainable parameters")
    p.add_argument("--name", action="append", help="model name per --step-ms")
    a = p.parse_args()
    names = a.name or [f"model {i}" for i in range(len(a.step_ms))]
    print("| model | link | N | all-reduce | strong, no overlap | strong, overlap | weak, no overlap | 50% strong efficiency below |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, step_ms, params in zip(names, a.step_ms, a.params):
        t1, nbytes = step_ms / 1e3, 4 * params
        for link, (n, beta, alpha) in LINKS.items():
            ar = allreduce_s(n, nbytes, beta, alpha)
            strong = t1 / (t1 / n + ar)
            strong_overlap = t1 / max(t1 / n, ar)
            weak = n * t1 / (t1 + ar)
            print(
                f"| {name} ({nbytes / 1e6:.2f} MB of f32 gradients, step {step_ms:g} ms) | {link} | {n} | "
                f"{ar * 1e6:.0f} µs | {strong:.1f}x | {strong_overlap:.1f}x | {weak:.1f}x | {n * ar * 1e3:.1f} ms |"
            )


if __name__ == "__main__":
    main()
