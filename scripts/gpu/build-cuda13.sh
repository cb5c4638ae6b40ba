#!/usr/bin/env bash
# Builds the GPU check binaries for a device machine that has no cargo and only CUDA 13
# libraries (this workplace's H200 image: NVRTC 13, cuBLAS 13, driver 580): a worktree of HEAD
# with cudarc's `cuda-13000` feature and the toolchain lookup's major version set to 13, built
# for x86-64-v3, packed into .gpu/bins.tgz (about 20 MB) for `scripts/gpu/device-check.sh`.
# The project itself stays on CUDA 12.9 (the pinned PyPI wheels); making the major version a
# cargo feature is the clean follow-up.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
wt=${GPU_WORKTREE:-/tmp/attune-gpu-build}
target=${GPU_TARGET_DIR:-/tmp/attune-gpu-target}
rm -rf "$wt"; git -C "$root" worktree prune
git -C "$root" worktree add -q --detach "$wt" HEAD
cd "$wt"
sed -i 's/"cuda-12090"/"cuda-13000"/' Cargo.toml
sed -i 's/const REQUIRED_MAJOR: &str = ".12";/const REQUIRED_MAJOR: \&str = ".13";/; s/"libnvrtc.so.12")?;/"libnvrtc.so.13")?;/; s/"libnvrtc-builtins.so.12.9"/"libnvrtc-builtins.so.13.0"/; s/"libcublasLt.so.12")?;/"libcublasLt.so.13")?;/; s/"libcublas.so.12")?;/"libcublas.so.13")?;/' crates/cuda/src/toolchain.rs
export CARGO_TARGET_DIR=$target RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release -p xtask -p attune-lab
tests=(matmul creation nnops elementwise reduce autograd index views errors)
args=(); for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test --release --no-run -p attune-tensor "${args[@]}" 2>&1 | tee /tmp/attune-gpu-tests.log
mkdir -p "$root/.gpu/bin"; rm -f "$root/.gpu/bin/"*
cp "$target/release/xtask" "$target/release/attune" "$root/.gpu/bin/"
for t in "${tests[@]}"; do
  cp "$(grep "tests/$t.rs" /tmp/attune-gpu-tests.log | sed 's/.*(\(.*\))/\1/')" "$root/.gpu/bin/t-$t"
done
tar czf "$root/.gpu/bins.tgz" -C "$root/.gpu" bin && rm -rf "$root/.gpu/bin"
git -C "$root" worktree remove --force "$wt"
echo "packed $root/.gpu/bins.tgz; add /.gpu/ to .git/info/exclude and run the device tool with carry [\".gpu\"]: bash scripts/gpu/device-check.sh"
