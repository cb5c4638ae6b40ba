#!/usr/bin/env bash
# bf16 attention on the CPU against Attune's f32 and PyTorch's bf16 SDPA (docs/benchmarks.md,
# "Attention in bf16"): six shapes, forward and forward+backward, the three sides alternated
# in every round, then one table of GFLOP/s, ratios and shares of the bf16 peak measured in
# the same run (`cargo xtask peak`: the AMX tiles' where the CPU has them, else vdpbf16ps').
#
#   bash benches/peers/attn_precision.sh [--rounds 2] [--threads 2] [--python PATH]
#
# Ratios use each side's best median over the rounds. --python defaults to `python3`; it must
# import torch (benches/peers/README.md). Run from anywhere; paths are the repository's.
set -euo pipefail

rounds=2
threads=2
python=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "attn_precision.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "attn_precision.sh: $python cannot import torch; pass --python (benches/peers/README.md)" >&2
    exit 2
fi
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
[ -e "$jemalloc" ] || { echo "attn_precision.sh: $jemalloc is missing (apt-get install libjemalloc2)" >&2; exit 2; }

# B,H,S,D and the mask of each shape: training-like (d 64 and 128, causal or not), one long.
shapes=("1,8,1024,64 --causal" "1,8,1024,64" "4,8,512,128 --causal" "4,8,512,128" "4,8,1024,64 --causal" "1,8,2048,128 --causal")

cargo build --quiet --release -p xtask  # the cargo xtask calls below then start at once
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# The peak of the unit Attune's bf16 products run on: the tiles (AMX) where the CPU has them
# and ATTUNE_NO_AMX is unset, else the vdpbf16ps dot product (crates/attention/src/flash/tiles.rs).
peaks="$(cargo xtask peak --threads "$threads" 2>&1)"
tiles="$(sed -n 's/^bf16 tiles (AMX tdpbf16ps): \([0-9.]*\) GFLOP.*/\1/p' <<<"$peaks")"
if [ -n "$tiles" ] && [ "${ATTUNE_NO_AMX:-0}" = 0 ]; then
    peak="$tiles"; unit="AMX tile"
else
    peak="$(sed -n 's/^bf16 dot product (512-bit vdpbf16ps): \([0-9.]*\) GFLOP.*/\1/p' <<<"$peaks")"; unit="dot-product"
fi
for r in $(seq "$rounds"); do
    for s in "${shapes[@]}"; do
        set -- $s
        shape="$1"; shift
        echo "== round $r: $shape $*" >&2
        for dt in f32 bf16; do
            cargo xtask bench-attn --backend cpu --shape "$shape" "$@" --bwd --threads "$threads" --dtype "$dt" --json | tail -1 >>"$out"
        done
        LD_PRELOAD="$jemalloc" "$python" benches/peers/torch_sdpa.py --shape "$shape" "$@" --bwd --threads "$threads" --dtype bf16 --json | tail -1 >>"$out"
    done
done

"$python" - "$out" "${peak:-0}" "$unit" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peak, unit = float(sys.argv[2]), sys.argv[3]
def key(x):
    return (x["batch"], x["heads_q"], x["seq_q"], x["head_dim"], x["causal"])
shapes = list(dict.fromkeys(key(x) for x in rows))
def best(side, dtype, k, what):
    ms = [x[what + "_ms"] for x in rows if key(x) == k and x["impl"] == side and x["dtype"] == dtype]
    gf = [x[what + "_gflops"] for x in rows if key(x) == k and x["impl"] == side and x["dtype"] == dtype]
    return min(ms), max(gf)
print(f"bf16 {unit} peak: {peak:.0f} GFLOP/s" if peak else "bf16 peak: not measured (no avx512_bf16)")
print("| shape (B,H,S,D) | pass | Attune bf16 GFLOP/s | share of bf16 peak | Attune f32 | PyTorch bf16 | bf16 / f32 | Attune / PyTorch (bf16) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for k in shapes:
    name = "%d,%d,%d,%d%s" % (k[0], k[1], k[2], k[3], " causal" if k[4] else "")
    for what in ("fwd", "fwdbwd"):
        b_ms, b_gf = best("attune", "bf16", k, what)
        f_ms, f_gf = best("attune", "f32", k, what)
        t_ms, t_gf = best("torch_sdpa", "bf16", k, what)
        share = f"{100 * b_gf / peak:.0f}%" if peak else "-"
        print(f"| {name} | {what} | {b_gf:.0f} | {share} | {f_gf:.0f} | {t_gf:.0f} | {f_ms / b_ms:.2f}x | {t_ms / b_ms:.2f}x |")
EOF
