//! The SIMT forward (kernels/attention/fwd_simt.cu): plain f32 arithmetic on CUDA cores, the
//! full-accuracy f32 path and the path for f16/bf16 on GPUs older than sm_80.
//!
//! Launch rules: grid `(ceil(max_q_len / BM), heads_q, num_segments)`, block `32 * warps`
//! threads, dynamic shared memory [`SimtConfig::shared_bytes`] (always <= 48 KiB, so no opt-in
//! is needed on any GPU). The block shape depends only on head_dim ([`SimtConfig::forward`]).

use super::{GpuCall, module};
use crate::error::{AttentionError, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan};
use attune_tensor::{DType, Tensor};

/// Shared memory a block may use without opting in (every arch).
const SMEM_LIMIT: usize = 48 * 1024;

/// The compile-time block shape of a SIMT attention kernel for one head_dim, mirroring
/// `SimtCfg` in fwd_simt.cu (keep the two in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimtConfig {
    /// Query rows per warp (`SIMT_R`): 4 up to head_dim 128, else 2 (accumulator registers).
    pub rows_per_warp: usize,
    /// Warps per block.
    pub warps: usize,
    /// Keys per lane in a key tile (`SIMT_KPL`): 2 up to head_dim 64, else 1.
    pub keys_per_lane: usize,
    /// The head dimension the kernel is compiled for.
    pub head_dim: usize,
}

impl SimtConfig {
    fn rows(head_dim: usize) -> usize {
        if head_dim <= 128 { 4 } else { 2 }
    }

    fn kpl(head_dim: usize) -> usize {
        if head_dim <= 64 { 2 } else { 1 }
    }

    /// The block shape of `attn_fwd_simt` (4 warps).
    pub fn forward(head_dim: usize) -> SimtConfig {
        SimtConfig { rows_per_warp: Self::rows(head_dim), warps: 4, keys_per_lane: Self::kpl(head_dim), head_dim }
    }

    /// The block shape of `attn_fwd_split`: 16 rows per block.
    pub fn split(head_dim: usize) -> SimtConfig {
        let r = Self::rows(head_dim);
        SimtConfig { rows_per_warp: r, warps: 16 / r, keys_per_lane: Self::kpl(head_dim), head_dim }
    }

    /// Query rows per block (BM).
    pub fn block_rows(&self) -> usize {
        self.rows_per_warp * self.warps
    }

    /// Keys per tile (BN).
    pub fn block_keys(&self) -> usize {
        32 * self.keys_per_lane
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        32 * self.warps as u32
    }

    /// Dynamic shared memory in bytes: the q rows, one K/V tile (rows padded by 4 floats unless
    /// head_dim is a multiple of 32, which swizzles instead) and, when that still fits in 48 KiB,
    /// the per-warp probability buffer (else probabilities travel by warp shuffles).
    pub fn shared_bytes(&self) -> usize {
        let hd = self.head_dim;
        let kvs = if hd.is_multiple_of(32) { hd } else { hd + 4 };
        let base = 4 * (self.block_rows() * hd + self.block_keys() * kvs);
        let p = 4 * self.warps * self.block_keys() * self.rows_per_warp;
        if base + p <= SMEM_LIMIT { base + p } else { base }
    }
}

/// Checks that `out` and `lse` are the contiguous outputs of `call` (as
/// [`GpuCall::alloc_forward_outputs`] makes them).
pub(crate) fn check_outputs(call: &GpuCall, out: &Tensor, lse: &Tensor) -> Result<()> {
    let pb = &call.problem;
    let want_out = [pb.batch, pb.heads_q, pb.seq_q, pb.head_dim];
    let want_lse = [pb.batch, pb.heads_q, pb.seq_q];
    let ok = |t: &Tensor, dims: &[usize], dt: DType| {
        t.dims() == dims && t.dtype() == dt && t.is_contiguous() && t.device() == call.device
    };
    if !ok(out, &want_out, call.dtype) || !ok(lse, &want_lse, DType::F32) {
        return Err(AttentionError::Shape(format!(
            "forward outputs must be contiguous on {}: out {want_out:?} {} and lse {want_lse:?} f32, got out {:?} {} \
             on {} and lse {:?} {} on {}; allocate them with GpuCall::alloc_forward_outputs",
            call.device,
            call.dtype,
            out.dims(),
            out.dtype(),
            out.device(),
            lse.dims(),
            lse.dtype(),
            lse.device()
        )));
    }
    Ok(())
}

/// Grid y and z extents are at most 65535 on every GPU.
pub(crate) fn check_grid_yz(what: &str, heads_q: usize, segments: usize) -> Result<()> {
    if heads_q > 65535 || segments > 65535 {
        return Err(AttentionError::Shape(format!(
            "{what}: {heads_q} query heads and {segments} segments (batch entries or packed sequences); \
             the CUDA grid allows at most 65535 of each, so split the call"
        )));
    }
    Ok(())
}

/// Runs `attn_fwd_simt`: writes every row of `out` (input dtype) and `lse` (f32), both
/// contiguous as [`GpuCall::alloc_forward_outputs`] makes them.
pub fn launch_fwd_simt(call: &GpuCall, out: &Tensor, lse: &Tensor) -> Result<()> {
    let pb = &call.problem;
    call.check_supported()?;
    check_outputs(call, out, lse)?;
    let mut params = call.params;
    if params.max_q_len <= 0 || pb.heads_q == 0 || pb.segments.is_empty() {
        return Ok(()); // no query rows to write
    }
    check_grid_yz("attn_fwd_simt", pb.heads_q, pb.segments.len())?;
    params.out = call.address(out)?;
    params.lse = call.address(lse)?;
    let cfg = SimtConfig::forward(pb.head_dim);
    let grid = Dim3::new(
        (params.max_q_len as usize).div_ceil(cfg.block_rows()) as u32,
        pb.heads_q as u32,
        pb.segments.len() as u32,
    );
    let plan = LaunchPlan::new(
        module("fwd_simt.cu", call.dtype, pb.head_dim, &[])?,
        "attn_fwd_simt",
        grid,
        Dim3::x(cfg.threads()),
        vec![KernelArg::pod(&params)],
    )
    .with_shared(cfg.shared_bytes() as u32);
    call.launch(&plan)
}

#[cfg(feature = "testing")]
/// The `fwd_simt.cu` modules for these dtypes and head dims (unsupported ones skipped), each
/// with its entry and block size, for `cargo xtask build-kernels`.
pub fn simt_variants(dtypes: &[DType], head_dims: &[usize]) -> Vec<(attune_cuda::ModuleSpec, Vec<(String, u32)>)> {
    let mut out = Vec::new();
    for &dt in dtypes {
        for &hd in head_dims {
            if !crate::support::gpu_head_dim(hd) {
                continue;
            }
            if let Ok(spec) = module("fwd_simt.cu", dt, hd, &[]) {
                out.push((spec, vec![("attn_fwd_simt".to_string(), SimtConfig::forward(hd).threads())]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_fits_without_opt_in() {
        for hd in crate::support::gpu_head_dims() {
            for cfg in [SimtConfig::forward(hd), SimtConfig::split(hd)] {
                assert!(cfg.shared_bytes() <= SMEM_LIMIT, "hd {hd}: {cfg:?} needs {} B", cfg.shared_bytes());
                assert_eq!(cfg.threads() % 32, 0);
            }
            assert_eq!(SimtConfig::split(hd).block_rows(), 16);
        }
    }
}
