#!/usr/bin/env python3
"""PyTorch peer of Attune's Recurrent Attention Model (issue 16, docs/ram.md): the same network,
sensor and hybrid loss in plain PyTorch, with the parameter names of Attune's ParamStore
(glimpse.{what,where,what_out,where_out}.*, core.{hidden,input}.*, locator.*, baseline.*,
classifier.*).

  bench     times one training step (zero_grad, an episode of sampled glimpses, the hybrid loss,
            backward, AdamW) on random images: the peer of `attune bench-step --model ram-centred`
            or `ram-cluttered`. One JSON line with the median and quartiles of the per-step time,
            the keys of torch_train.py's bench.
  selftest  the sensor against the crops worked out by hand in crates/nn/tests/glimpse.rs, and
            which parameters each part of the loss reaches.

Presets: ram-centred (28x28 images, 6 glimpses of 8x8 at 1 scale) and ram-cluttered (60x60,
8 glimpses of 12x12 at 3 scales), both 128/128/256/256, sigma 0.15, 10 classes. `--seq` is the
image side (the canvas, as the RAM tasks' seq_len in Attune), by default the preset's.

  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benches/peers/torch_ram.py \\
      bench --model ram-cluttered --batch 64 --steps 20 --warmup 3 --threads 2 --json
"""
import argparse
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# The timing loop and its statistics, shared with the transformer's peer.
from torch_train import time_steps

PRESETS = {
    "ram-centred": dict(side=28, glimpse_size=8, scales=1, glimpses=6),
    "ram-cluttered": dict(side=60, glimpse_size=12, scales=3, glimpses=8),
}
SIZES = dict(what_hidden=128, where_hidden=128, glimpse_features=256, hidden=256, num_classes=10, sigma=0.15)


def sensor(images, loc, g, scales):
    """Attune's GlimpseSensor: `scales` patches of sides g 2^i around `loc (B, 2)` = (row, col) in
    [-1, 1], each averaged over 2^i x 2^i blocks to g x g; pixels outside the image are 0 and count
    in the averages. On an axis of n pixels the location is y = (l + 1) / 2 n and a patch of side s
    starts at floor(y - s/2 + 1/2) (halves rounded up). Returns (B, scales, g, g), no gradient."""
    with torch.no_grad():
        b, rows, cols = images.shape
        pad = g << (scales - 1)  # the largest side: no window reaches further out
        padded = F.pad(images, (pad, pad, pad, pad))
        n = torch.tensor([rows, cols], dtype=torch.float64)
        y = (loc.detach().double() + 1.0) * 0.5 * n
        batch = torch.arange(b)[:, None, None]
        out = []
        for i in range(scales):
            f = 1 << i
            s = g * f
            start = torch.floor(y - s * 0.5 + 0.5).long() + pad  # (B, 2) in padded coordinates
            span = torch.arange(s)
            r, c = start[:, 0:1] + span, start[:, 1:2] + span  # (B, s) each
            patch = padded[batch, r[:, :, None], c[:, None, :]]  # (B, s, s)
            if f > 1:
                patch = patch.reshape(b, g, f, g, f).mean(dim=(2, 4))
            out.append(patch)
        return torch.stack(out, dim=1)


def linears(**shapes):
    return nn.ModuleDict({k: nn.Linear(i, o) for k, (i, o) in shapes.items()})


class Ram(nn.Module):
    """docs/ram.md "The model": mu_t = tanh(locator(h)), b_t = baseline(h) from the detached state,
    l_t ~ N(mu_t, sigma^2) detached and clamped, g_t = ReLU(what_out(ReLU(what(patches))) +
    where_out(ReLU(where(l_t)))), h_t = ReLU(core.hidden(h) + core.input(g_t)), logits from h_T."""

    def __init__(self, glimpse_size, scales, glimpses, what_hidden, where_hidden, glimpse_features, hidden,
                 num_classes, sigma):
        super().__init__()
        self.g, self.k, self.glimpses, self.hidden, self.sigma = glimpse_size, scales, glimpses, hidden, sigma
        self.glimpse = linears(what=(scales * glimpse_size ** 2, what_hidden), where=(2, where_hidden),
                               what_out=(what_hidden, glimpse_features), where_out=(where_hidden, glimpse_features))
        self.core = linears(hidden=(hidden, hidden), input=(glimpse_features, hidden))
        self.locator = nn.Linear(hidden, 2)
        self.baseline = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, images):
        """Returns logits (B, classes), log_probs (B, T) of the unclamped samples, baselines (B, T)."""
        b = images.shape[0]
        gl = self.glimpse
        h = images.new_zeros(b, self.hidden)
        log_probs, baselines = [], []
        const = math.log(self.sigma) + 0.5 * math.log(2 * math.pi)
        for _ in range(self.glimpses):
            state = h.detach()
            mean = torch.tanh(self.locator(state))
            baselines.append(self.baseline(state).squeeze(1))
            sample = (mean.detach() + self.sigma * torch.randn_like(mean)).detach()
            log_probs.append((-(sample - mean) ** 2 / (2 * self.sigma ** 2) - const).sum(1))
            loc = sample.clamp(-1.0, 1.0)
            patches = sensor(images, loc, self.g, self.k).reshape(b, -1)
            g = F.relu(gl["what_out"](F.relu(gl["what"](patches))) + gl["where_out"](F.relu(gl["where"](loc))))
            h = F.relu(self.core["hidden"](h) + self.core["input"](g))
        return self.classifier(h), torch.stack(log_probs, 1), torch.stack(baselines, 1)


def hybrid_loss(logits, log_probs, baselines, targets):
    """cross-entropy + mean_b sum_t -(R_b - b_bt) log p_bt (advantage detached) + mean_bt (b_bt - R_b)^2,
    with R_b = 1 for a right answer: attune_nn::ram_loss. Returns (total, cross-entropy, policy)."""
    ce = F.cross_entropy(logits, targets)
    reward = (logits.detach().argmax(1) == targets).to(logits.dtype)[:, None].expand_as(log_probs)
    policy = -((reward - baselines.detach()) * log_probs).sum(1).mean()
    return ce + policy + F.mse_loss(baselines, reward), ce, policy


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    p = PRESETS[a.model]
    side = a.seq or p["side"]
    torch.manual_seed(0)
    model = Ram(p["glimpse_size"], p["scales"], p["glimpses"], **SIZES).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(a.batch, side, side, generator=gen)
    targets = torch.randint(0, SIZES["num_classes"], (a.batch,), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        total, ce, policy = hybrid_loss(*model(images), targets)
        total.backward()
        opt.step()
        policy.item()  # Attune's step reads back its policy loss for the log as well
        return ce.item()

    stats, last = time_steps(step, a.warmup, a.steps)
    r = {"peer": "torch", "model": a.model, "batch": a.batch, "seq": side, "threads": a.threads, **stats,
         "parameters": sum(x.numel() for x in model.parameters()), "last_loss": last,
         "torch_version": torch.__version__}
    print(json.dumps(r) if a.json else f"torch {a.model} B={a.batch} side={side} threads={a.threads}: median "
          f"{r['median_ms']:.2f} ms/step (q1 {r['q1_ms']:.2f}, q3 {r['q3_ms']:.2f}) over {a.steps} steps")


def cmd_selftest(_a):
    fails = []
    six = torch.arange(1, 37, dtype=torch.float32).reshape(1, 6, 6)  # pixel (r, c) = 6 r + c + 1
    # crates/nn/tests/glimpse.rs: two scales of 2x2 on the 6x6 image.
    cases = [((0.0, 0.0), [15, 16, 21, 22, 11.5, 13.5, 23.5, 25.5]),
             ((-1.0, -1.0), [0, 0, 0, 1, 0, 0, 0, 4.5]),
             ((1.0, 1.0), [36, 0, 0, 0, 32.5, 0, 0, 0]),
             ((-0.25, 0.6), [11, 12, 17, 18, 7.5, 4.5, 19.5, 10.5])]
    for loc, want in cases:
        got = sensor(six, torch.tensor([loc]), 2, 2).flatten().tolist()
        if got != want:
            fails.append(f"sensor at {loc}: {got} != {want}")
    # Rounding: exact centring when possible, ties down and right (glimpse.rs, the same cases).
    for g, n, want in [(2, 6, [14, 15, 20, 21]), (3, 5, [6, 7, 8, 11, 12, 13, 16, 17, 18]),
                       (2, 5, [12, 13, 17, 18]), (3, 6, [14, 15, 16, 20, 21, 22, 26, 27, 28])]:
        img = torch.arange(n * n, dtype=torch.float32).reshape(1, n, n)
        got = sensor(img, torch.zeros(1, 2), g, 1).flatten().tolist()
        if got != want:
            fails.append(f"rounding g={g} n={n}: {got} != {want}")
    # What each loss trains: cross-entropy never reaches the locator or baseline, the policy
    # term reaches only the locator, the baseline term only the baseline.
    torch.manual_seed(0)
    m = Ram(4, 2, 3, 8, 8, 16, 16, 5, 0.15)
    logits, lp, bl = m(torch.rand(6, 12, 12))
    targets = torch.randint(0, 5, (6,))
    _, ce, policy = hybrid_loss(logits, lp, bl, targets)
    reward = (logits.detach().argmax(1) == targets).float()[:, None].expand_as(bl)
    for name, loss, allowed in [("cross-entropy", ce, ("glimpse.", "core.", "classifier.")),
                                ("policy", policy, ("locator.",)), ("baseline", F.mse_loss(bl, reward), ("baseline.",))]:
        params = dict(m.named_parameters())
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        reached = [k for k, gr in zip(params, grads) if gr is not None and gr.abs().sum() > 0]
        if any(not k.startswith(allowed) for k in reached) or not reached:
            fails.append(f"{name} reaches {reached}, expected only {allowed}")
    for f in fails:
        print("FAIL", f)
    if fails:
        sys.exit(1)
    print(f"selftest: sensor ({len(cases)} hand-computed 6x6 glimpses, 4 rounding cases) and loss routing: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time AdamW training steps of the RAM")
    b.add_argument("--model", default="ram-centred", choices=sorted(PRESETS))
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--seq", type=int, default=None, help="image side (default: the preset's 28 or 60)")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--json", action="store_true")
    sub.add_parser("selftest", help="the sensor against hand-computed crops, the loss's gradient routing")
    a = ap.parse_args()
    if a.cmd == "bench":
        if a.steps < 10:
            ap.error(f"--steps {a.steps} is too few: report medians of at least 10 timed steps, docs/benchmarks.md")
        if a.batch < 1 or (a.seq is not None and a.seq < 1) or a.threads < 1:
            ap.error("--batch, --seq and --threads must be positive")
    {"bench": cmd_bench, "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    main()
