//! Split-KV forward for decoding (kernels/attention/fwd_split.cu): segments of at most 16 query
//! rows against long keys. The visible keys of each segment are cut into `num_splits` chunks;
//! `attn_fwd_split` (grid `(num_splits, heads_q, num_segments)`, block
//! [`SimtConfig::split`]) writes one normalised f32 partial output and lse per chunk and row,
//! and `attn_split_combine` (one warp per row, 4 per 128-thread block) merges them by their lse
//! into `out` (input dtype) and `lse`.

use super::fwd_simt::{SimtConfig, check_grid_yz, check_outputs};
use super::{GpuCall, module};
use crate::error::{AttentionError, Result};
use crate::params::Problem;
use attune_cuda::{Dim3, KernelArg, LaunchPlan};
use attune_tensor::{DType, Tensor};

/// Most query rows a segment may have on the split-KV path (one block holds them all).
pub const MAX_SPLIT_ROWS: usize = 16;
/// Most key splits [`choose_splits`] picks.
pub const MAX_SPLITS: usize = 64;
/// Fewest keys per split [`choose_splits`] allows: below this, the combine pass and the
/// per-block fixed costs outweigh the gain in parallelism.
pub const MIN_KEYS_PER_SPLIT: usize = 256;
/// Fewest keys (longest segment) for which split-KV is considered at all.
pub const MIN_SPLIT_KEYS: usize = 512;
/// Rows per block of the combine kernel (one warp each).
const COMBINE_WARPS: usize = 4;

/// How many key splits to use for `pb` on a GPU with `sm_count` multiprocessors; 1 means
/// split-KV is not worth it (use the one-pass forward).
///
/// Split-KV pays when the ordinary grid (`heads_q * segments` blocks for at most 16 rows)
/// leaves most of the GPU idle: pick enough splits for about two blocks per SM, but keep each
/// split at least [`MIN_KEYS_PER_SPLIT`] keys long and at most [`MAX_SPLITS`]. Returns 1 when a
/// segment has more than [`MAX_SPLIT_ROWS`] query rows or the longest segment has fewer than
/// [`MIN_SPLIT_KEYS`] keys.
pub fn choose_splits(pb: &Problem, sm_count: usize) -> usize {
    let max_q = pb.segments.iter().map(|s| s.q_len).max().unwrap_or(0);
    let max_k = pb.segments.iter().map(|s| s.k_len).max().unwrap_or(0);
    if max_q == 0 || max_q > MAX_SPLIT_ROWS || max_k < MIN_SPLIT_KEYS {
        return 1;
    }
    let blocks = (pb.heads_q * pb.segments.len()).max(1);
    let wanted = (2 * sm_count.max(1)).div_ceil(blocks);
    wanted.min(max_k / MIN_KEYS_PER_SPLIT).clamp(1, MAX_SPLITS)
}

/// Runs the split-KV forward with `num_splits` key splits (>= 1) and the combine: writes every
/// row of `out` (input dtype) and `lse` (f32), contiguous as
/// [`GpuCall::alloc_forward_outputs`] makes them. Every segment must have at most 16 query rows.
/// The f32 partial workspaces (`num_splits * rows * (head_dim + 1)` floats) are allocated here.
pub fn launch_fwd_split(call: &GpuCall, out: &Tensor, lse: &Tensor, num_splits: usize) -> Result<()> {
    let pb = &call.problem;
    call.check_supported()?;
    check_outputs(call, out, lse)?;
    if !(1..=65535).contains(&num_splits) {
        return Err(AttentionError::Param(format!(
            "split-KV needs 1..=65535 key splits, got {num_splits}; choose_splits picks a good count"
        )));
    }
    let max_q = call.params.max_q_len.max(0) as usize;
    if max_q > MAX_SPLIT_ROWS {
        return Err(AttentionError::Shape(format!(
            "split-KV handles segments of at most {MAX_SPLIT_ROWS} query rows, got {max_q}; \
             use launch_fwd_simt for longer queries"
        )));
    }
    let rows = pb.batch * pb.heads_q * pb.seq_q;
    if rows == 0 || pb.segments.is_empty() {
        return Ok(()); // no query rows to write
    }
    check_grid_yz("attn_fwd_split", pb.heads_q, pb.segments.len())?;
    let dev = call.device;
    let partial_out = Tensor::uninit_on_gpu("attention", [num_splits, rows, pb.head_dim], DType::F32, dev)?;
    let partial_lse = Tensor::uninit_on_gpu("attention", [num_splits, rows], DType::F32, dev)?;
    let mut params = call.params;
    params.out = call.address(out)?;
    params.lse = call.address(lse)?;
    params.partial_out = call.address(&partial_out)?;
    params.partial_lse = call.address(&partial_lse)?;
    params.num_splits = num_splits as i32;
    let spec = module("fwd_split.cu", call.dtype, pb.head_dim, &[])?;
    let cfg = SimtConfig::split(pb.head_dim);
    let split = LaunchPlan::new(
        spec.clone(),
        "attn_fwd_split",
        Dim3::new(num_splits as u32, pb.heads_q as u32, pb.segments.len() as u32),
        Dim3::x(cfg.threads()),
        vec![KernelArg::pod(&params)],
    )
    .with_shared(cfg.shared_bytes() as u32);
    call.launch(&split)?;
    let combine = LaunchPlan::new(
        spec,
        "attn_split_combine",
        Dim3::x(rows.div_ceil(COMBINE_WARPS) as u32),
        Dim3::x(32 * COMBINE_WARPS as u32),
        vec![KernelArg::pod(&params)],
    );
    call.launch(&combine)?;
    // The workspaces live until both launches are queued (frees are stream-ordered).
    drop((partial_out, partial_lse));
    Ok(())
}

#[cfg(feature = "testing")]
/// The `fwd_split.cu` modules for these dtypes and head dims (unsupported ones skipped), each
/// with both entries and their block sizes, for `cargo xtask build-kernels`.
pub fn split_variants(dtypes: &[DType], head_dims: &[usize]) -> Vec<(attune_cuda::ModuleSpec, Vec<(String, u32)>)> {
    let mut out = Vec::new();
    for &dt in dtypes {
        for &hd in head_dims {
            if !crate::support::gpu_head_dim(hd) {
                continue;
            }
            if let Ok(spec) = module("fwd_split.cu", dt, hd, &[]) {
                let entries = vec![
                    ("attn_fwd_split".to_string(), SimtConfig::split(hd).threads()),
                    ("attn_split_combine".to_string(), 32 * COMBINE_WARPS as u32),
                ];
                out.push((spec, entries));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Segment;

    fn problem(seq_q: usize, seq_k: usize, heads: usize, batch: usize) -> Problem {
        Problem {
            batch,
            heads_q: heads,
            heads_kv: heads,
            seq_q,
            seq_k,
            head_dim: 64,
            scale: 0.125,
            left: None,
            right: None,
            softcap: None,
            dropout: None,
            segments: (0..batch)
                .map(|b| Segment { batch: b, q_start: 0, q_len: seq_q, k_start: 0, k_len: seq_k })
                .collect(),
        }
    }

    #[test]
    fn split_heuristic() {
        // Decoding one row per head of 8 heads against 8k keys on 132 SMs: 264 / 8 = 33
        // splits wanted, capped at 8192 / 256 = 32 by the keys per split.
        assert_eq!(choose_splits(&problem(1, 8192, 8, 1), 132), 32);
        // Long queries or short keys: no split.
        assert_eq!(choose_splits(&problem(17, 8192, 8, 1), 132), 1);
        assert_eq!(choose_splits(&problem(1, 511, 8, 1), 132), 1);
        // Enough blocks already: no split.
        assert_eq!(choose_splits(&problem(1, 4096, 32, 16), 132), 1);
        // Capped by keys per split.
        assert_eq!(choose_splits(&problem(4, 1024, 1, 1), 132), 4);
        // Capped at MAX_SPLITS.
        assert_eq!(choose_splits(&problem(1, 1 << 20, 1, 1), 132), MAX_SPLITS);
    }
}
