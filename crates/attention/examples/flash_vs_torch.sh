#!/usr/bin/env bash
# Alternates the flash bench and the PyTorch SDPA peer (GUIDE.md §4: same run, ratios are the
# result), then prints per case the median over rounds of each side's medians and the ratio.
# Usage: crates/attention/examples/flash_vs_torch.sh [ROUNDS] [REPS] [THREADS]
set -euo pipefail
rounds=${1:-3}
reps=${2:-10}
threads=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
py=${PYTHON:-/work/pyenv/bin/python}
jemalloc=$(ls /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 2>/dev/null || true)
(cd "$root" && cargo build --release -q -p attune-attention --example flash_bench)
log=$(mktemp)
for r in $(seq "$rounds"); do
  "$target/release/examples/flash_bench" --threads "$threads" --reps "$reps" | tee -a "$log"
  LD_PRELOAD=$jemalloc "$py" "$here/torch_sdpa_bench.py" --threads "$threads" --reps "$reps" | tee -a "$log"
done
"$py" - "$log" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, shape, causal, mode, ms, gf = line.split()
    runs[(shape, causal, mode, who)].append(float(gf.split("=")[1]))
print(f"{'shape':<16}{'causal':<8}{'mode':<8}{'flash GFLOP/s':>14}{'torch GFLOP/s':>14}{'ratio':>8}")
for (shape, causal, mode, who) in sorted(runs):
    if who != "flash":
        continue
    f = statistics.median(runs[(shape, causal, mode, "flash")])
    t = statistics.median(runs[(shape, causal, mode, "torch")])
    print(f"{shape:<16}{causal.split('=')[1]:<8}{mode:<8}{f:>14.1f}{t:>14.1f}{f / t:>8.2f}")
PY
