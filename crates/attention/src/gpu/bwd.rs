//! The attention backward on a GPU device (kernels/attention/bwd.cu): the `delta` pre-pass,
//! the dK/dV kernel, and dQ either by f32 atomics (plus a conversion) or, deterministic, by a
//! separate kernel that recomputes the scores per query tile.
//!
//! # Tiles
//!
//! SIMT, f32 arithmetic, 256 threads a block. Shared memory holds Q, dO (BM rows), K, V (BN
//! rows) as f32 and the P and dS tiles; registers hold each thread's dK and dV (dkdv kernel) or
//! dQ (dq kernel): 2 rows x ceil(HD / TC) columns each, at most 2 x 2 x 8 = 32 f32. Shared
//! memory stays under 99 KiB (what sm_86/sm_89 allow a block; sm_80 allows 163 KiB, sm_90
//! 227 KiB). Registers and shared memory as ptxas 12.9 reports them for f32/f16/bf16 on sm_80
//! and sm_90 (the `#[ignore]`d test `bwd_kernels_do_not_spill` in tests/gpu_bwd.rs; zero spills
//! and zero stack for every head_dim 8..=256 step 8):
//!
//! | head_dim  | BN (keys) | BM (queries) | TC | dkdv regs | dq regs | dynamic shared memory |
//! |-----------|-----------|--------------|----|-----------|---------|-----------------------|
//! | 8..=56    | 64        | 32           | 8  | 90..150   | 104..108| 26.0 .. 62.0 KiB      |
//! | 64..=128  | 32        | 32           | 16 | 118..143  | 108..110| 42.8 .. 74.8 KiB      |
//! | 136..=256 | 16        | 16           | 32 | 95..128   | 80..88  | 37.4 .. 67.4 KiB      |
//!
//! TC is the number of threads along head_dim in the accumulation phases; a head_dim that TC
//! does not divide leaves the last column group partly idle. The tile kernels declare
//! `__launch_bounds__(256, 1)`, so ptxas never spills to reach a higher occupancy (see bwd.cu);
//! the delta pre-pass and the dq conversion use 28..32 registers.

use super::{GpuCall, module, unit_last_stride};
use crate::error::{AttentionError, Result};
use attune_cuda::{Dim3, KernelArg, LaunchPlan, ModuleSpec};
use attune_tensor::{DType, Tensor};

/// Threads of the dkdv and dq blocks.
const THREADS: u32 = 256;
/// Threads of the element-wise blocks (delta pre-pass, dq conversion).
const EW_THREADS: u32 = 256;
/// Grid cap of the grid-stride element-wise kernels.
const EW_MAX_BLOCKS: usize = 4096;

/// The tile shape of one head_dim (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    /// Query rows of a tile.
    pub bm: u32,
    /// Key rows of a tile.
    pub bn: u32,
    /// Threads of the dkdv and dq blocks.
    pub threads: u32,
    /// Threads along head_dim in the accumulation phases.
    pub tc: u32,
}

impl Tiles {
    /// The tiles of `head_dim` (a multiple of 8 in 8..=256, checked by [`check_head_dim`]).
    pub fn for_head_dim(head_dim: usize) -> Tiles {
        let (bn, bm, tc) = match head_dim {
            0..=56 => (64, 32, 8),
            57..=128 => (32, 32, 16),
            _ => (16, 16, 32),
        };
        Tiles { bm, bn, threads: THREADS, tc }
    }

    /// The module defines of these tiles.
    pub fn defines(&self) -> [(&'static str, u32); 4] {
        [("BWD_BM", self.bm), ("BWD_BN", self.bn), ("BWD_NT", self.threads), ("BWD_TC", self.tc)]
    }

    /// Dynamic shared memory of the dkdv and dq kernels in bytes (the layout in bwd.cu).
    pub fn shared_bytes(&self, head_dim: usize) -> u32 {
        let (bm, bn, ld) = (self.bm as usize, self.bn as usize, head_dim + 4);
        let words = 2 * (bm + bn) * ld + 2 * bn * (bm + 1) + 4 * bm;
        (words * 4) as u32
    }
}

/// Errors unless the kernels are built for `head_dim`: a multiple of 8 in 8..=256.
pub fn check_head_dim(head_dim: usize) -> Result<()> {
    if head_dim.is_multiple_of(8) && (8..=256).contains(&head_dim) {
        return Ok(());
    }
    Err(AttentionError::Shape(format!(
        "the GPU attention backward supports head_dim a multiple of 8 from 8 to 256, got {head_dim}; \
         pad head_dim, or run flash::backward on the CPU"
    )))
}

/// Entry names and block sizes of the backward module.
fn entries(tiles: &Tiles) -> Vec<(String, u32)> {
    vec![
        ("attn_bwd_dot".to_string(), EW_THREADS),
        ("attn_bwd_dkdv".to_string(), tiles.threads),
        ("attn_bwd_dq".to_string(), tiles.threads),
        ("attn_bwd_dq_convert".to_string(), EW_THREADS),
    ]
}

/// The backward module of one dtype and head_dim.
fn bwd_module(dtype: DType, head_dim: usize) -> Result<(ModuleSpec, Tiles)> {
    let tiles = Tiles::for_head_dim(head_dim);
    Ok((module("bwd.cu", dtype, head_dim, &tiles.defines())?, tiles))
}

/// Every module, entry and block size [`backward`] can launch for these dtypes and head_dims
/// (unsupported head_dims are skipped), for `cargo xtask build-kernels`.
pub fn bwd_variants(dtypes: &[DType], head_dims: &[usize]) -> Vec<(ModuleSpec, Vec<(String, u32)>)> {
    let mut out = Vec::new();
    for &dtype in dtypes {
        for &d in head_dims.iter().filter(|&&d| check_head_dim(d).is_ok()) {
            if let Ok((spec, tiles)) = bwd_module(dtype, d) {
                out.push((spec, entries(&tiles)));
            }
        }
    }
    out
}

/// Errors unless `t` has `dims` and `dtype` and lives on the call's device.
fn check_tensor(call: &GpuCall, name: &str, t: &Tensor, dims: &[usize], dtype: DType) -> Result<()> {
    if t.dims() != dims {
        return Err(AttentionError::Shape(format!(
            "attention backward: {name} has shape {:?}, expected {dims:?}; pass the forward's {name}",
            t.dims()
        )));
    }
    if t.dtype() != dtype {
        return Err(AttentionError::Shape(format!(
            "attention backward: {name} is {} but must be {dtype}; convert it with to_dtype({dtype})",
            t.dtype()
        )));
    }
    if t.device() != call.device {
        return Err(AttentionError::Shape(format!(
            "attention backward: {name} is on {} but q, k and v are on {}; move it there",
            t.device(),
            call.device
        )));
    }
    Ok(())
}

/// Grid of a grid-stride element-wise kernel over `n` items, `per_block` per block.
fn ew_grid(n: usize, per_block: usize) -> Dim3 {
    Dim3::x(n.div_ceil(per_block).clamp(1, EW_MAX_BLOCKS) as u32)
}

/// A grid extent as u32, or an error naming the limit.
fn extent(what: &str, n: usize, max: usize) -> Result<u32> {
    if n > max {
        return Err(AttentionError::Shape(format!(
            "attention backward: {what} is {n}, above the {max} a CUDA grid dimension allows; split the call"
        )));
    }
    Ok(n as u32)
}

/// Gradients `(dq, dk, dv)` of the attention of `call`, given the forward's `out`
/// (q's shape and dtype, or f32: the unrounded output of an f16/bf16 forward, which the
/// `rowsum(dout * out)` pre-pass then reads) and `lse` (`(batch, heads_q, seq_q)`, f32), and the output gradient
/// `dout` (q's shape and dtype, any strides with unit stride on head_dim). The results are
/// contiguous, in the input dtype, dq shaped like q and dk, dv like k and v.
///
/// `deterministic`: dQ by a separate kernel without atomics, so two runs give bitwise-equal
/// gradients (a second score recomputation); otherwise the dK/dV kernel adds dQ with f32
/// atomics, whose order varies between runs.
pub fn backward(
    call: &GpuCall,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    deterministic: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let pb = &call.problem;
    let (dtype, device) = (call.dtype, call.device);
    let q_dims = [pb.batch, pb.heads_q, pb.seq_q, pb.head_dim];
    let k_dims = [pb.batch, pb.heads_kv, pb.seq_k, pb.head_dim];
    let rows = [pb.batch, pb.heads_q, pb.seq_q];
    let out_dtype = if out.dtype() == DType::F32 { DType::F32 } else { dtype };
    check_tensor(call, "out", out, &q_dims, out_dtype)?;
    check_tensor(call, "dout", dout, &q_dims, dtype)?;
    check_tensor(call, "lse", lse, &rows, DType::F32)?;
    let zeros = |dims: &[usize], dt: DType| Tensor::zeros(dims, dt, &device).map_err(AttentionError::from);
    let (max_q, max_k) = (call.params.max_q_len as usize, call.params.max_k_len as usize);
    if max_q == 0 || max_k == 0 || pb.batch * pb.heads_q == 0 {
        // No query sees a key: every gradient is zero.
        return Ok((zeros(&q_dims, dtype)?, zeros(&k_dims, dtype)?, zeros(&k_dims, dtype)?));
    }
    check_head_dim(pb.head_dim)?;
    let (spec, tiles) = bwd_module(dtype, pb.head_dim)?;

    // Inputs the kernels read as contiguous rows: out and lse (dout only needs unit stride on
    // head_dim). Kept alive until the launches are done.
    let out = if out.is_contiguous() { out.clone() } else { out.contiguous()? };
    let lse = if lse.is_contiguous() { lse.clone() } else { lse.contiguous()? };
    let dout = unit_last_stride(dout)?;
    let delta = Tensor::uninit_on_gpu("attention backward", rows, DType::F32, device)?;
    // dK/dV are zeroed: keys outside every segment (key padding) get no gradient.
    let (dk, dv) = (zeros(&k_dims, dtype)?, zeros(&k_dims, dtype)?);
    // f32 atomics accumulate straight into an f32 dq; other dtypes go through dq_accum.
    let (dq, dq_accum) = match (deterministic, dtype) {
        (true, _) => (Tensor::uninit_on_gpu("attention backward", q_dims, dtype, device)?, None),
        (false, DType::F32) => (zeros(&q_dims, dtype)?, None),
        (false, _) => {
            let acc = zeros(&q_dims, DType::F32)?;
            (Tensor::uninit_on_gpu("attention backward", q_dims, dtype, device)?, Some(acc))
        }
    };

    let mut p = call.params;
    if out_dtype == dtype {
        p.out = call.address(&out)?;
    } else {
        p.out_f32 = call.address(&out)?;
    }
    p.lse = call.address(&lse)?;
    p.dout = call.address(&dout)?;
    p.dq = call.address(&dq)?;
    p.dk = call.address(&dk)?;
    p.dv = call.address(&dv)?;
    p.delta = call.address(&delta)?;
    p.dq_accum = match (&dq_accum, deterministic) {
        (Some(acc), _) => call.address(acc)?,
        (None, false) => p.dq,
        (None, true) => 0,
    };
    let s = dout.stride();
    [p.dout_batch_stride, p.dout_head_stride, p.dout_row_stride] = [s[0] as i64, s[1] as i64, s[2] as i64];
    let args = vec![KernelArg::pod(&p)];
    let launch = |entry: &str, grid: Dim3, block: u32, shared: u32| -> Result<()> {
        call.launch(&LaunchPlan::new(spec.clone(), entry, grid, Dim3::x(block), args.clone()).with_shared(shared))
    };

    let nrows = pb.batch * pb.heads_q * pb.seq_q;
    launch("attn_bwd_dot", ew_grid(nrows, (EW_THREADS / 32) as usize), EW_THREADS, 0)?;
    let segs = extent("the number of segments", pb.segments.len(), 65535)?;
    let smem = tiles.shared_bytes(pb.head_dim);
    let grid_k = Dim3::new(
        extent("the key tiles", max_k.div_ceil(tiles.bn as usize), i32::MAX as usize)?,
        extent("heads_kv", pb.heads_kv, 65535)?,
        segs,
    );
    launch("attn_bwd_dkdv", grid_k, tiles.threads, smem)?;
    if deterministic {
        let grid_q = Dim3::new(
            extent("the query tiles", max_q.div_ceil(tiles.bm as usize), i32::MAX as usize)?,
            extent("heads_q", pb.heads_q, 65535)?,
            segs,
        );
        launch("attn_bwd_dq", grid_q, tiles.threads, smem)?;
    } else if dq_accum.is_some() {
        launch("attn_bwd_dq_convert", ew_grid(nrows * pb.head_dim, EW_THREADS as usize), EW_THREADS, 0)?;
    }
    Ok((dq, dk, dv))
}
