#!/usr/bin/env bash
# The GPU checks, run on the device machine from the repository root with the binaries that
# scripts/gpu/build-cuda13.sh packed into .gpu/bins.tgz (the device image has no cargo):
# the op and attention parity grid on Cuda(0), bench-attn against cuBLAS on the benchmark
# shapes, the main job on the GPU, and the tensor op suite on Cuda(0). Each step has a time
# cap, and the whole stays under ${DEADLINE:-480} s. Writes $OUT/summary.txt and the logs.
set -u
O=${OUT:-/tmp/out}; mkdir -p "$O"; S="$O/summary.txt"
log() { echo "== $*" | tee -a "$S"; }
start=$(date +%s); left() { echo $(( ${DEADLINE:-480} - ($(date +%s) - start) )); }
tar xzf .gpu/bins.tgz -C .gpu && B=.gpu/bin
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader | tee -a "$S"
# The image's CUDA 13 libraries, laid out as a cuda-tools folder (ATTUNE_CUDA_TOOLS).
T=/tmp/cudatools; mkdir -p "$T/lib64"
for pat in 'libnvrtc.so.13*' 'libnvrtc-builtins.so.13*' 'libcublas.so.13*' 'libcublasLt.so.13*'; do
  f=$(find /usr/local/cuda/ -name "$pat" \( -type f -o -type l \) 2>/dev/null | grep -v stub | head -1)
  [ -n "$f" ] && ln -sf "$(readlink -f "$f")" "$T/lib64/$(basename "$(readlink -f "$f")")"
done
ln -sfn "$(dirname "$(find /usr/local/cuda/ -name cuda_fp16.h | head -1)")" "$T/include"
export ATTUNE_CUDA_TOOLS=$T ATTUNE_CACHE_DIR=/tmp/attune-cache
# First: it compiles most kernels, so later steps find them in the cache.
log "parity cuda (tensor ops, attention grid, PyTorch cases)"
timeout 220 $B/xtask parity --backend cuda --cases crates/attention/tests/data/torch_cases.safetensors > "$O/parity.log" 2>&1
tail -1 "$O/parity.log" | tee -a "$S"
for s in 4,16,4096,64 4,16,4096,128 2,16,8192,128 1,32,16384,128; do
  for c in "" --causal; do
    [ "$(left)" -lt 150 ] && { log "bench-attn $s $c skipped: deadline"; continue; }
    log "bench-attn $s $c bf16 fwd+bwd"
    timeout 40 $B/xtask bench-attn --backend cuda --shape $s $c --dtype bf16 --bwd --json 2>&1 | grep '^{' | tee -a "$S"
  done
done
log "main job on the GPU"
timeout 90 $B/attune train --device cuda --out /tmp/train-gpu > "$O/train.log" 2>&1; echo "rc=$?" | tee -a "$S"
tail -3 "$O/train.log" | tee -a "$S"
log "tensor op suite on Cuda(0)"
for t in $B/t-*; do
  [ "$(left)" -lt 20 ] && { log "$(basename "$t") skipped: deadline"; continue; }
  ATTUNE_TEST_DEVICE=cuda timeout $(( $(left) < 60 ? $(left) : 60 )) "$t" --test-threads 8 > "$O/tests.tmp" 2>&1
  echo "$(basename "$t") rc=$? $(grep '^test result' "$O/tests.tmp" | tail -1)" | tee -a "$S"; cat "$O/tests.tmp" >> "$O/tests.log"
done
log "done"
