#!/usr/bin/env python3
"""PyTorch peer of Attune's training (issue 6): the model of docs/model.md written in plain
PyTorch, with the same parameter names and layouts as Attune's model.safetensors.

  bench   times one AdamW training step (zero_grad, forward, loss, backward, step) on random
          tokens: the peer of `attune` training throughput. One JSON line with the median and
          quartiles of the per-step time.
  check   loads an Attune checkpoint (config.json "model", model.safetensors with
          load_state_dict(strict=True)), runs probe.safetensors "tokens" (and "lengths") in eval
          mode and compares with the "logits" Attune stored there; exits 1 above --atol.
  export  the reverse direction: a randomly initialised torch model saved as config.json,
          model.safetensors and probe.safetensors (tokens, lengths, logits) for Attune's tests.
  selftest  export + check for every option combination, plus masking/causality properties.

--model takes a preset (mqar-default, large), a JSON object, or a path to a JSON file (either
the model object or a config.json holding one under "model").

  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benches/peers/torch_train.py \\
      bench --model mqar-default --batch 32 --seq 64 --steps 20 --warmup 3 --threads 2 --json
  python benches/peers/torch_train.py check --checkpoint runs/mqar
"""
import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

PRESETS = {
    "mqar-default": dict(kind="lm", vocab_size=128, max_seq_len=64, d_model=128, n_layers=2, n_heads=2,
                         positions="learned", mlp="gelu", norm="layernorm", causal=True),
    "large": dict(kind="lm", vocab_size=128, max_seq_len=256, d_model=256, n_layers=4, n_heads=8,
                  positions="learned", mlp="gelu", norm="layernorm", causal=True),
    # The README's Fashion-MNIST ViT and MovieLens-100K SASRec (attune bench-step's presets).
    "vit-fashion": dict(kind="classifier", vocab_size=1, max_seq_len=49, d_model=96, n_layers=4, n_heads=4,
                        causal=False, num_classes=10, pooling="cls",
                        patches=dict(rows=28, cols=28, size=4, stride=4)),
    "vit-stem": dict(kind="classifier", vocab_size=1, max_seq_len=49, d_model=96, n_layers=4, n_heads=4,
                     causal=False, num_classes=10, pooling="cls", patches=dict(rows=28, cols=28, size=4, stride=4),
                     stem=[dict(channels=32, stride=1), dict(channels=64, stride=2)]),
    "sasrec-ml100k": dict(kind="lm", vocab_size=1683, max_seq_len=50, d_model=64, n_layers=2, n_heads=2,
                          causal=True, tie_embeddings=True),
}
EPS = 1e-5


def complete_config(m):
    """Fills the spec's defaults and validates, so every later step sees a full model object."""
    missing = [k for k in ("kind", "vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads") if k not in m]
    if missing:
        raise ValueError(f"model config lacks {missing} (docs/model.md lists the fields): {m}")
    c = {"n_kv_heads": m["n_heads"], "d_ff": 4 * m["d_model"], "mlp": "gelu", "norm": "layernorm",
         "positions": "learned", "rope_theta": 10000.0, "causal": m["kind"] == "lm", "window": None,
         "softcap": None, "dropout": 0.0, "pooling": "soft", "pool_k": 8, "patches": None,
         "stem": [], "tie_embeddings": False, **m}
    # Hard pooling (a sampled choice trained by REINFORCE) is not modelled here: refused.
    choices = {"kind": ("lm", "classifier"), "mlp": ("gelu", "swiglu"), "norm": ("layernorm", "rmsnorm"),
               "positions": ("learned", "rope", "alibi", "none"), "pooling": ("soft", "cls", "mean")}
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise ValueError(f"model.{key} = {c[key]!r}: expected one of {allowed}")
    if c["d_model"] % c["n_heads"] or c["n_heads"] % c["n_kv_heads"]:
        raise ValueError(f"d_model {c['d_model']} must divide by n_heads {c['n_heads']}, "
                         f"which must divide by n_kv_heads {c['n_kv_heads']}")
    if c["positions"] == "rope" and (c["d_model"] // c["n_heads"]) % 2:
        raise ValueError(f"rope needs an even head_dim, got {c['d_model'] // c['n_heads']}")
    if c["kind"] == "classifier" and not c.get("num_classes"):
        raise ValueError("a classifier needs model.num_classes")
    if c["patches"] is not None and c["kind"] != "classifier":
        raise ValueError("model.patches (a Vision Transformer) needs kind classifier")
    if c["stem"] and c["patches"] is None:
        raise ValueError("model.stem (convolutions before the patches) needs model.patches")
    if c["stem"] and any(p % math.prod(layer["stride"] for layer in c["stem"])
                         for p in (c["patches"]["size"], c["patches"]["stride"])):
        raise ValueError(f"model.stem's strides must multiply to a divisor of the patch size and stride: {c['stem']}")
    if c["tie_embeddings"] and (c["kind"] != "lm" or c["patches"] is not None):
        raise ValueError("model.tie_embeddings needs an lm reading token ids")
    if c["window"] is not None and len(c["window"]) != 2:
        raise ValueError(f"model.window = {c['window']}: expected [left, right] (-1 = unbounded) or null")
    return c


def parse_model(arg):
    if arg in PRESETS:
        return complete_config(PRESETS[arg])
    text = open(arg).read() if os.path.isfile(arg) else arg
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--model {arg!r}: not a preset ({', '.join(PRESETS)}), a JSON file or JSON: {e}")
    return complete_config(obj.get("model", obj))


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def make_norm(c):
    return nn.LayerNorm(c["d_model"], eps=EPS) if c["norm"] == "layernorm" else RMSNorm(c["d_model"])


def rope(x, theta):
    """Rotate-half RoPE on (B, H, S, Hd): dims j and j + Hd/2 form a pair rotated by pos * theta^(-2j/Hd)."""
    s, hd = x.shape[-2], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(s, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def alibi_slopes(h):
    """Press et al.: 2^(-8 (i+1) / h) for a power of two h; otherwise the slopes of the power of
    two below, then every other slope of the power of two above (as in their reference)."""
    def geometric(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    if h & (h - 1) == 0:
        return torch.tensor(geometric(h), dtype=torch.float64)
    low = 1 << (h.bit_length() - 1)
    return torch.tensor(geometric(low) + geometric(2 * low)[0::2][: h - low], dtype=torch.float64)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h, self.hkv = c["d_model"], c["n_heads"], c["n_kv_heads"]
        self.hd = d // self.h
        self.c = c
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, self.hkv * self.hd)
        self.v_proj = nn.Linear(d, self.hkv * self.hd)
        self.o_proj = nn.Linear(d, d)
        self.force_materialised = False  # selftest flips this to compare the two paths

    def forward(self, x, lengths=None):
        b, s, d = x.shape
        c = self.c
        q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.hkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.hkv, self.hd).transpose(1, 2)
        if c["positions"] == "rope":
            q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
        p_drop = c["dropout"] if self.training else 0.0
        plain = (c["positions"] != "alibi" and c["softcap"] is None and c["window"] is None
                 and lengths is None and not self.force_materialised)
        if plain:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"], dropout_p=p_drop,
                                                 enable_gqa=self.hkv != self.h)
        else:
            out = self.materialised(q, k, v, lengths, p_drop)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))

    def materialised(self, q, k, v, lengths, p_drop):
        c, s = self.c, q.shape[2]
        if self.hkv != self.h:  # query head h reads kv head h // (H / Hkv)
            k = k.repeat_interleave(self.h // self.hkv, dim=1)
            v = v.repeat_interleave(self.h // self.hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        if c["softcap"] is not None:
            scores = c["softcap"] * torch.tanh(scores / c["softcap"])
        i = torch.arange(s)[:, None]
        j = torch.arange(s)[None, :]
        if c["positions"] == "alibi":
            bias = -alibi_slopes(self.h)[:, None, None] * (i - j).abs()
            scores = scores + bias.to(scores.dtype)
        left, right = c["window"] or (-1, -1)  # -1: unbounded on that side
        visible = ((j <= i) | (not c["causal"])) & ((j >= i - left) | (left < 0)) & ((j <= i + right) | (right < 0))
        visible = visible[None, None].expand(q.shape[0], 1, s, s)
        if lengths is not None:  # padded keys are invisible
            visible = visible & (torch.arange(s)[None, None, None, :] < lengths[:, None, None, None])
        # A finite fill keeps fully masked rows NaN-free; multiplying by the mask makes them output 0.
        probs = torch.softmax(scores.masked_fill(~visible, torch.finfo(scores.dtype).min), dim=-1) * visible
        probs = F.dropout(probs, p_drop, training=p_drop > 0)
        return probs @ v


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c["d_model"], c["d_ff"]
        self.swiglu = c["mlp"] == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(d, f, bias=False)
            self.up_proj = nn.Linear(d, f, bias=False)
            self.down_proj = nn.Linear(f, d, bias=False)
        else:
            self.fc1 = nn.Linear(d, f)
            self.fc2 = nn.Linear(f, d)

    def forward(self, x):
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.fc2(F.gelu(self.fc1(x)))  # approximate='none': the erf form


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = make_norm(c), Attention(c), make_norm(c), Mlp(c)

    def forward(self, x, lengths=None):
        x = x + self.attn(self.norm1(x), lengths)
        return x + self.mlp(self.norm2(x))


class AttentionPooling(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.alpha = nn.Linear(d, 1, bias=False)

    def forward(self, h, lengths):
        s = self.alpha(torch.tanh(self.proj(h)))  # (B, S, 1)
        pad = torch.arange(h.shape[1])[None, :, None] >= lengths[:, None, None]
        a = torch.softmax(s.masked_fill(pad, float("-inf")), dim=1)
        return (a * h).sum(dim=1)


class PatchEmbed(nn.Module):
    """patch_embed: each patch's pixels mapped to d_model by weight and bias; with a stem
    (crates/nn/src/layers/stem.rs), 3x3 convolutions (padding 1, exact GELU) first, and the
    patches cut from their feature map. The weights keep Attune's shapes, (out, ky * kx * in)
    with the channel fastest, and are viewed as Conv2d kernels."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        p, cin = c["patches"], 1
        self.stem = nn.ModuleList()
        for layer in c["stem"]:
            self.stem.append(nn.Linear(9 * cin, layer["channels"]))
            cin = layer["channels"]
        self.scale = math.prod(layer["stride"] for layer in c["stem"])
        side = p["size"] // self.scale
        proj = nn.Linear(side * side * cin, c["d_model"])
        self.weight, self.bias = proj.weight, proj.bias

    @staticmethod
    def kernel(weight, side):
        """(out, side * side * in) with the channel fastest -> Conv2d's (out, in, side, side)."""
        return weight.view(weight.shape[0], side, side, -1).permute(0, 3, 1, 2)

    def forward(self, images):
        p = self.c["patches"]
        if not self.stem:  # (B, rows, cols) -> (B, patches, size * size), pixels row by row
            return F.linear(F.unfold(images[:, None], kernel_size=p["size"], stride=p["stride"]).transpose(1, 2),
                            self.weight, self.bias)
        x = images[:, None]
        for conv, layer in zip(self.stem, self.c["stem"]):
            x = F.gelu(F.conv2d(x, self.kernel(conv.weight, 3), conv.bias, stride=layer["stride"], padding=1))
        side = p["size"] // self.scale
        x = F.conv2d(x, self.kernel(self.weight, side), self.bias, stride=p["stride"] // self.scale)
        return x.flatten(2).transpose(1, 2)


class Model(nn.Module):
    """Parameters are registered in Attune's order: the input (embed, or a Vision Transformer's
    patch_embed), the class token cls, pos, the layers, norm_f, the head."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        d, p = c["d_model"], c["patches"]
        if p is not None:
            self.patch_embed = PatchEmbed(c)
        else:
            self.embed = nn.Embedding(c["vocab_size"], d)
        self.cls_token = c["kind"] == "classifier" and c["pooling"] == "cls"
        if self.cls_token:
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        if c["positions"] == "learned":
            self.pos = nn.Embedding(c["max_seq_len"] + int(self.cls_token), d)
        if c["tie_embeddings"]:  # SASRec: tables at N(0, 1/d) so the first scores are O(1)
            for table in (self.embed, getattr(self, "pos", None)):
                if table is not None:
                    nn.init.normal_(table.weight, std=d ** -0.5)
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm_f = make_norm(c)
        if c["kind"] == "lm":
            if not c["tie_embeddings"]:
                self.lm_head = nn.Linear(d, c["vocab_size"])
        else:
            if c["pooling"] == "soft":
                self.pool = AttentionPooling(d)
            self.head = nn.Linear(d, c["num_classes"])

    def forward(self, tokens, lengths=None):
        if self.c["patches"] is not None:
            x = self.patch_embed(tokens)
        else:
            x = self.embed(tokens)
        b, s = x.shape[0], x.shape[1]
        if self.c["positions"] == "learned" and s > self.c["max_seq_len"]:
            raise ValueError(f"sequence length {s} > max_seq_len {self.c['max_seq_len']} with learned positions")
        if self.c["kind"] == "classifier" and lengths is None:
            lengths = torch.full((b,), s, dtype=torch.long)
        if lengths is not None and (lengths.min() < 1 or lengths.max() > s):
            raise ValueError(f"lengths must lie in [1, {s}], got {lengths.tolist()}")
        if self.cls_token:
            x = torch.cat([self.cls.expand(b, 1, -1), x], dim=1)
            lengths, s = lengths + 1, s + 1
        if self.c["positions"] == "learned":
            x = x + self.pos(torch.arange(s))
        # An lm sees no padding; the classifier's full-length batches take the plain path too.
        enc_lengths = None if self.c["kind"] == "lm" or bool((lengths == s).all()) else lengths
        for layer in self.layers:
            x = layer(x, enc_lengths)
        h = self.norm_f(x)
        if self.c["kind"] == "lm":
            return h @ self.embed.weight.t() if self.c["tie_embeddings"] else self.lm_head(h)
        if self.cls_token:
            return self.head(h[:, 0])
        if self.c["pooling"] == "mean":
            valid = (torch.arange(s)[None, :] < lengths[:, None]).to(h.dtype)
            return self.head((h * valid[..., None]).sum(1) / lengths[:, None].to(h.dtype))
        return self.head(self.pool(h, lengths))

    def set_materialised(self, on):
        for layer in self.layers:
            layer.attn.force_materialised = on


def time_steps(step, warmup, steps):
    """Runs `step` `warmup` times untimed, then `steps` times timed; returns the median and
    quartiles in ms (the JSON keys every peer's bench prints) and the last step's result."""
    for _ in range(warmup):
        step()
    times, last = [], None
    for _ in range(steps):
        t = time.perf_counter()
        last = step()
        times.append((time.perf_counter() - t) * 1e3)
    q1, _, q3 = statistics.quantiles(times, n=4)
    return {"median_ms": round(statistics.median(times), 4), "q1_ms": round(q1, 4), "q3_ms": round(q3, 4)}, last


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    c = parse_model(a.model)
    torch.manual_seed(0)
    model = Model(c).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    p = c["patches"]
    if p is not None:  # a Vision Transformer: random images of its size; --seq is ignored
        tokens = torch.rand((a.batch, p["rows"], p["cols"]), generator=gen)
    else:
        tokens = torch.randint(0, c["vocab_size"], (a.batch, a.seq), generator=gen)
    lm = c["kind"] == "lm"
    targets = torch.randint(0, c["vocab_size"] if lm else c["num_classes"], tokens.shape if lm else (a.batch,),
                            generator=gen)

    # --precision bf16: the forward and loss under CPU autocast (matmuls and SDPA in bf16, the
    # f32 master weights and the optimizer untouched), as `attune bench-step --precision bf16`.
    def amp():
        return torch.autocast("cpu", dtype=torch.bfloat16) if a.precision == "bf16" else contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp():
            logits = model(tokens)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        return loss.item()

    stats, _ = time_steps(step, a.warmup, a.steps)
    name = a.model if a.model in PRESETS else c
    # The sequence the transformer reads: the tokens, or a Vision Transformer's patches.
    seq = a.seq if p is None else ((p["rows"] - p["size"]) // p["stride"] + 1) * ((p["cols"] - p["size"]) // p["stride"] + 1)
    r = {"peer": "torch", "model": name, "batch": a.batch, "seq": seq, "threads": a.threads,
         "precision": a.precision, **stats,
         "torch_version": torch.__version__}
    print(json.dumps(r) if a.json else f"torch B={a.batch} S={a.seq} threads={a.threads}: median "
          f"{r['median_ms']:.2f} ms/step (q1 {r['q1_ms']:.2f}, q3 {r['q3_ms']:.2f}) over {a.steps} steps")


def compare_names(model, state):
    """Every mismatch at once (missing, unexpected, wrong shape), so one run shows what to fix."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing: {k} {want[k]}" for k in sorted(want.keys() - got.keys())]
    problems += [f"unexpected: {k} {got[k]}" for k in sorted(got.keys() - want.keys())]
    problems += [f"shape: {k} file {got[k]} vs model {want[k]}" for k in sorted(want.keys() & got.keys())
                 if want[k] != got[k]]
    return problems


def check_dir(path, atol, dtype=torch.float64, quiet=False):
    """Returns the max abs error between the torch logits and the stored ones (raises on name problems)."""
    with open(os.path.join(path, "config.json")) as f:
        c = complete_config(json.load(f)["model"])
    model = Model(c)
    state = load_file(os.path.join(path, "model.safetensors"))
    problems = compare_names(model, state)
    if problems:
        raise ValueError(f"{path}/model.safetensors does not match the spec's names:\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)
    model.to(dtype).eval()
    probe = load_file(os.path.join(path, "probe.safetensors"))
    with torch.no_grad():
        inputs = probe["images"].to(dtype) if "images" in probe else probe["tokens"].long()
        logits = model(inputs, probe["lengths"].long() if "lengths" in probe else None)
    want = probe["logits"].to(dtype)
    if logits.shape != want.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} vs stored {tuple(want.shape)}")
    err = (logits - want).abs().max().item()
    if not quiet:
        print(f"{path}: max abs error {err:.3e} over {tuple(want.shape)} logits (atol {atol:g}, torch in {dtype})")
    return err


def cmd_check(a):
    err = check_dir(a.checkpoint, a.atol, torch.float64 if a.dtype == "f64" else torch.float32)
    if not err <= a.atol:
        sys.exit(f"check failed: max abs error {err:.3e} > atol {a.atol:g}")


def export_dir(c, seed, out, b, s):
    """Random init (PyTorch defaults) and probe; logits computed in f64 from the f32 weights."""
    torch.manual_seed(seed)
    model = Model(c).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, c["vocab_size"], (b, s), generator=gen)
    probe = {"tokens": tokens}
    lengths = None
    if c["kind"] == "classifier":  # one full row, the rest random in [1, s]
        lengths = torch.randint(1, s + 1, (b,), generator=gen)
        lengths[0] = s
        probe["lengths"] = lengths
    os.makedirs(out, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, "model.safetensors"))
    with torch.no_grad():
        probe["logits"] = model.double()(tokens, lengths).float().contiguous()
    save_file(probe, os.path.join(out, "probe.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model": c}, f, indent=2)


def cmd_export(a):
    c = parse_model(a.model)
    export_dir(c, a.seed, a.out, a.batch, a.seq)
    print(f"wrote {a.out}/config.json, model.safetensors, probe.safetensors ({c['kind']}, B={a.batch}, S={a.seq})")


def torch_reference_logits(m, t, lengths):
    """The same weights run through nn.TransformerEncoderLayer (norm_first, gelu): an independent
    implementation of the layernorm/gelu/learned-position model, with its own masks."""
    c, s = m.c, t.shape[1]
    x = m.embed(t) + m.pos(torch.arange(s))
    mask = nn.Transformer.generate_square_subsequent_mask(s, dtype=x.dtype) if c["causal"] else None
    pad = None if lengths is None else torch.arange(s)[None, :] >= lengths[:, None]
    for blk in m.layers:
        ref = nn.TransformerEncoderLayer(c["d_model"], c["n_heads"], c["d_ff"], dropout=0.0, activation="gelu",
                                         batch_first=True, norm_first=True, dtype=x.dtype).eval()
        a, w = blk.attn, ref.state_dict()
        w["self_attn.in_proj_weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        w["self_attn.in_proj_bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        for dst, src in (("self_attn.out_proj", a.o_proj), ("linear1", blk.mlp.fc1), ("linear2", blk.mlp.fc2),
                         ("norm1", blk.norm1), ("norm2", blk.norm2)):
            w[dst + ".weight"], w[dst + ".bias"] = src.weight, src.bias
        ref.load_state_dict(w)
        x = ref(x, src_mask=mask, src_key_padding_mask=pad, is_causal=c["causal"])
    h = m.norm_f(x)
    if c["kind"] == "lm":
        return m.lm_head(h)
    pooled = []
    for row, n in zip(h, lengths):  # pool each row over its own valid positions only
        a = torch.softmax(m.pool.alpha(torch.tanh(m.pool.proj(row[:n]))), dim=0)
        pooled.append((a * row[:n]).sum(0))
    return m.head(torch.stack(pooled))


def selftest_properties():
    """Checks against independent references and properties that hold whatever the weights."""
    gen = torch.Generator().manual_seed(7)
    base = dict(vocab_size=50, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, dropout=0.0)
    fails = []

    def make(**kw):
        torch.manual_seed(0)
        return Model(complete_config(dict(base, **kw))).double().eval()

    def diff(x, y):
        return (x - y).abs().max().item()

    t = torch.randint(0, 50, (3, 16), generator=gen)
    t2 = t.clone()
    t2[:, 9:] = torch.randint(0, 50, (3, 7), generator=gen)
    lengths = torch.tensor([16, 5, 1])
    with torch.no_grad():
        for kind, ln in (("lm", None), ("classifier", lengths)):
            m = make(kind=kind, num_classes=3)
            if diff(m(t, ln), torch_reference_logits(m, t, ln)) > 1e-10:
                fails.append(f"{kind}: differs from nn.TransformerEncoderLayer")
        for extra in ({}, {"softcap": 5.0}, {"positions": "alibi"}, {"positions": "rope", "n_kv_heads": 2}):
            m = make(kind="lm", **extra)
            leak = diff(m(t)[:, :9], m(t2)[:, :9])  # tokens from 9 on must not reach earlier logits
            m.set_materialised(True)
            forced = m(t)
            m.set_materialised(False)
            if leak > 1e-12 or diff(forced, m(t)) > 1e-10:
                fails.append(f"lm {extra}: causal leak {leak:.2e} or materialised != sdpa")
        m = make(kind="classifier", num_classes=3)
        padded = t.clone()
        padded[1, 5:], padded[2, 1:] = 0, 3
        if diff(m(t, lengths), m(padded, lengths)) > 1e-12 or diff(m(t, lengths)[1], m(t[1:2, :5])[0]) > 1e-10:
            fails.append("classifier: padded tokens change the logits")
        m = make(kind="lm", n_layers=1, window=[2, 0])
        early = t.clone()
        early[:, :8] = (early[:, :8] + 1) % 50
        if diff(m(t)[:, 10], m(early)[:, 10]) > 1e-12:  # position 10 sees only tokens 8..10
            fails.append("window: tokens left of the window reach the output")
    # RoPE by hand: unit vector e_0 at position p becomes cos(p) e_0 + sin(p) e_{Hd/2} (inv_freq_0 = 1);
    # and q.k after RoPE depends on i - j only.
    e0 = torch.zeros(1, 1, 4, 8, dtype=torch.float64)
    e0[..., 0] = 1
    p = torch.arange(4, dtype=torch.float64)
    r = rope(e0, 10000.0)[0, 0]
    u, w = torch.randn(1, 1, 1, 8, dtype=torch.float64).expand(1, 1, 6, 8), torch.randn(8, dtype=torch.float64)
    sc = (rope(u, 100.0) @ rope(w.expand(1, 1, 6, 8), 100.0).transpose(-1, -2))[0, 0]
    if diff(r[:, 0], p.cos()) > 1e-15 or diff(r[:, 4], p.sin()) > 1e-15 or diff(sc[1:, 1:], sc[:-1, :-1]) > 1e-12:
        fails.append("rope: rotate-half convention or relative-position property broken")
    if alibi_slopes(8).tolist() != [2.0 ** -k for k in range(1, 9)]:  # Press et al.: 1/2 .. 1/256 for 8 heads
        fails.append("alibi slopes")
    return fails


def cmd_selftest(a):
    base = dict(vocab_size=37, max_seq_len=12, d_model=24, n_layers=2, n_heads=4, d_ff=40, dropout=0.0)
    axes = [("kind", ["lm", "classifier"]), ("mlp", ["gelu", "swiglu"]), ("norm", ["layernorm", "rmsnorm"]),
            ("positions", ["learned", "rope", "alibi", "none"]), ("n_kv_heads", [4, 2]),
            ("window", [None, [3, 1]]), ("softcap", [None, 4.0])]
    worst, fails, n = 0.0, [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for combo in itertools.product(*(vals for _, vals in axes)):
            m = dict(base, **{k: v for (k, _), v in zip(axes, combo)})
            if m["kind"] == "classifier":
                m["num_classes"] = 5
            c = complete_config(m)
            d = os.path.join(tmp, f"case{n}")
            export_dir(c, seed=n, out=d, b=3, s=10)
            # f32 torch against the f64 reference: exercises the whole load path with a real tolerance.
            err = check_dir(d, a.atol, torch.float32, quiet=True)
            worst, n = max(worst, err), n + 1
            if not err <= a.atol:
                fails.append(f"{c}: {err:.3e}")
    print(f"selftest: export+check on {n} option combinations, worst max abs error {worst:.3e} (atol {a.atol:g})")
    fails += selftest_properties()
    for f in fails:
        print("FAIL", f)
    if fails:
        sys.exit(1)
    print("selftest: nn.TransformerEncoderLayer reference, causality, padding, window, rope, alibi: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time AdamW training steps")
    b.add_argument("--model", default="mqar-default", help="preset, JSON or JSON file")
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--seq", type=int, default=64)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    b.add_argument("--json", action="store_true")
    c = sub.add_parser("check", help="compare with an Attune checkpoint's probe logits")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--atol", type=float, default=1e-4)
    c.add_argument("--dtype", choices=["f64", "f32"], default="f64",
                   help="torch's precision (f64: the exact result of the f32 weights)")
    e = sub.add_parser("export", help="write a random torch model and probe for Attune")
    e.add_argument("--model", required=True)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    e.add_argument("--batch", type=int, default=4)
    e.add_argument("--seq", type=int, default=32)
    s = sub.add_parser("selftest", help="export+check every option combination, plus mask properties")
    s.add_argument("--atol", type=float, default=1e-4)
    a = ap.parse_args()
    if a.cmd == "bench" and a.steps < 10:
        ap.error(f"--steps {a.steps} is too few: report medians of at least 10 timed steps, docs/benchmarks.md")
    try:
        {"bench": cmd_bench, "check": cmd_check, "export": cmd_export, "selftest": cmd_selftest}[a.cmd](a)
    except (ValueError, OSError, KeyError) as e:  # bad config, missing file or tensor: one line, no traceback
        sys.exit(f"{a.cmd} failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
