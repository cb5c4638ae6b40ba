//! The tensor-core forward (kernels/attention/fwd_mma.cu): f16/bf16 inputs on sm_80+, in the
//! FlashAttention-2 style (a block owns BM query rows, K/V tiles of BN keys stream through
//! shared memory with cp.async double buffering, mma.sync m16n8k16 for Q K^T and P V, the online
//! softmax in registers).
//!
//! Launch: grid `(ceil(max_q_len / BM), heads_q, num_segments)`, `32 * warps` threads, dynamic
//! shared memory [`MmaTiles::smem_bytes`]. The inputs must be 16-byte aligned
//! ([`GpuCall::aligned16`]); otherwise [`launch_fwd_mma`] returns an error and the caller falls
//! back to another kernel.

use super::{GpuCall, gpu_err, module};
use crate::error::{AttentionError, Result};
use attune_cuda::{Dim3, LaunchPlan, ModuleSpec};
use attune_tensor::{DType, Tensor};

/// The kernel file under kernels/attention/.
const FILE: &str = "fwd_mma.cu";
/// The entry point.
pub const ENTRY: &str = "attn_fwd_mma";

/// The tile shape of one (head_dim, arch): `bm` query rows per block (16 per warp), `bn` keys
/// per K/V tile, `warps` warps per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MmaTiles {
    /// Query rows per block (`16 * warps`).
    pub bm: usize,
    /// Keys per K/V tile (a multiple of 16).
    pub bn: usize,
    /// Warps per block.
    pub warps: usize,
}

impl MmaTiles {
    /// Dynamic shared memory of the kernel at `head_dim` with 2-byte elements: Q (`bm` rows) and
    /// two stages each of K and V (`bn` rows), every row `round_up(head_dim, 16) + 8` elements
    /// (the k-padding of Q K^T and the 16-byte bank-conflict padding).
    pub fn smem_bytes(&self, head_dim: usize) -> usize {
        let row = head_dim.div_ceil(16) * 16 + 8;
        (self.bm + 4 * self.bn) * row * 2
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        (self.warps * 32) as u32
    }
}

/// The tile table. Every entry uses 4 warps (64 query rows per block); BN is what changes:
///
/// | head_dim | sm_80..sm_89 | sm_90+  | why |
/// |----------|--------------|---------|-----|
/// | 8..64    | BN 64        | BN 64   | small rows: long key tiles amortise the softmax (46 KiB at 64) |
/// | 72..128  | BN 32        | BN 64   | sm_80's 164 KiB (sm_86/89: 99 KiB) fits 3 blocks of 52 KiB; sm_90's 227 KiB fits 2 of 87 KiB |
/// | 136..256 | BN 32        | BN 32   | the f32 O accumulator is `head_dim / 2` registers per thread (128 at 256): S stays at 16; 99 KiB at 256 fits every sm_8x |
///
/// Q's fragments stay in registers while `3 * head_dim / 4 + bn / 2 <= 112` (the kernel's
/// `Q_IN_REGS`: head_dim <= 128 at BN 32, <= 104 at BN 64) and are re-read from shared memory
/// per k-step otherwise, which keeps every entry free of spills on sm_80 and sm_90 (checked by
/// the ignored test `ptxas_reports_no_spills` in tests/gpu_fwd_mma.rs).
pub fn mma_tiles(head_dim: usize, arch: u32) -> MmaTiles {
    let bn = match head_dim {
        0..=64 => 64,
        65..=128 if arch >= 90 => 64,
        _ => 32,
    };
    MmaTiles { bm: 64, bn, warps: 4 }
}

/// Checks what the kernel needs beyond the validated problem: f16/bf16, a head_dim the GPU
/// kernels take ([`crate::supports`]), 16-byte aligned inputs, sm_80 or newer.
fn check(call: &GpuCall) -> Result<()> {
    if !matches!(call.dtype, DType::F16 | DType::BF16) {
        return Err(AttentionError::Shape(format!(
            "the tensor-core forward (fwd_mma) takes f16 or bf16 inputs, got {}; use the SIMT kernel for f32 or convert with to_dtype",
            call.dtype
        )));
    }
    call.check_supported()?;
    if !call.aligned16 {
        return Err(AttentionError::Shape(format!(
            "the tensor-core forward (fwd_mma) needs q, k and v 16-byte aligned with 16-byte aligned row strides (cp.async), got strides q {:?} k {:?} v {:?} (elements); make them contiguous or use the SIMT kernel",
            [call.params.q_batch_stride, call.params.q_head_stride, call.params.q_row_stride],
            [call.params.k_batch_stride, call.params.k_head_stride, call.params.k_row_stride],
            [call.params.v_batch_stride, call.params.v_head_stride, call.params.v_row_stride],
        )));
    }
    let arch = call.arch();
    if arch < 80 {
        return Err(AttentionError::Param(format!(
            "the tensor-core forward (fwd_mma) needs sm_80 or newer (mma.sync bf16, cp.async), the GPU is sm_{arch}; use the SIMT kernel"
        )));
    }
    Ok(())
}

/// The module of one (dtype, head_dim, tiles).
fn tiles_module(dtype: DType, head_dim: usize, t: MmaTiles) -> Result<ModuleSpec> {
    module(FILE, dtype, head_dim, &[("BM", t.bm as u32), ("BN", t.bn as u32), ("WARPS", t.warps as u32)])
}

/// Runs the forward of `call` into `out` (q's shape, contiguous, input dtype) and `lse`
/// (`(batch, heads_q, seq_q)` f32), with the tiles of [`mma_tiles`] for the device's arch.
pub fn launch_fwd_mma(call: &GpuCall, out: &Tensor, lse: &Tensor) -> Result<()> {
    launch_fwd_mma_tiles(call, out, lse, mma_tiles(call.problem.head_dim, call.arch()))
}

/// [`launch_fwd_mma`] with explicit tiles (tests run the sm_90 table on the emulator, tuning
/// tries others). `tiles.bm` must be `16 * tiles.warps` and `tiles.bn` a multiple of 16.
pub fn launch_fwd_mma_tiles(call: &GpuCall, out: &Tensor, lse: &Tensor, tiles: MmaTiles) -> Result<()> {
    check(call)?;
    if tiles.warps == 0 || tiles.bm != 16 * tiles.warps || tiles.bn == 0 || !tiles.bn.is_multiple_of(16) {
        return Err(AttentionError::Param(format!(
            "fwd_mma tiles {tiles:?}: bm must be 16 * warps (warps >= 1) and bn a positive multiple of 16"
        )));
    }
    let pb = &call.problem;
    let max_q = call.params.max_q_len.max(0) as usize;
    if max_q == 0 || pb.heads_q == 0 || pb.segments.is_empty() {
        return Ok(()); // no query row to write
    }
    let grid = [max_q.div_ceil(tiles.bm), pb.heads_q, pb.segments.len()];
    if grid[1] > 65_535 || grid[2] > 65_535 {
        return Err(AttentionError::Shape(format!(
            "fwd_mma: {} query heads and {} segments exceed the grid's 65535 limit on y and z; split the call",
            grid[1], grid[2]
        )));
    }
    let mut params = call.params;
    params.out = call.address(out)?;
    params.lse = call.address(lse)?;
    let spec = tiles_module(call.dtype, pb.head_dim, tiles)?;
    let plan = LaunchPlan::new(
        spec,
        ENTRY,
        Dim3::new(grid[0] as u32, grid[1] as u32, grid[2] as u32),
        Dim3::x(tiles.threads()),
        vec![attune_cuda::KernelArg::pod(&params)],
    )
    .with_shared(tiles.smem_bytes(pb.head_dim) as u32);
    call.dev.launch(&plan).map_err(gpu_err)
}

#[cfg(feature = "testing")]
/// Every module [`launch_fwd_mma`] can build for these head dims (those [`crate::supports`]
/// takes on a GPU; others are skipped) and archs, f16 and bf16, each with its entry and block size (for
/// `cargo xtask build-kernels`). Archs that share a tile shape share the module.
pub fn mma_variants(head_dims: &[usize], archs: &[u32]) -> Vec<(ModuleSpec, Vec<(String, u32)>)> {
    let mut out: Vec<(ModuleSpec, Vec<(String, u32)>)> = Vec::new();
    for &d in head_dims.iter().filter(|&&d| crate::support::gpu_head_dim(d)) {
        for &arch in archs.iter().filter(|&&a| a >= 80) {
            let t = mma_tiles(d, arch);
            for dtype in [DType::F16, DType::BF16] {
                let Ok(spec) = tiles_module(dtype, d, t) else { continue };
                if !out.iter().any(|(s, _)| *s == spec) {
                    out.push((spec, vec![(ENTRY.to_string(), t.threads())]));
                }
            }
        }
    }
    out
}
