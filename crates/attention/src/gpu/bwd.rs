//! The attention backward on a GPU device (kernels/attention/bwd.cu): the `delta` pre-pass,
//! the dK/dV kernel, and dQ either by f32 atomics (plus a conversion) or, deterministic, by a
//! separate kernel that recomputes the scores per query tile.
//!
//! The dK/dV kernel (with the atomic dQ) comes in two kinds ([`BwdKernel`]): the tensor-core
//! `attn_bwd_dkdv_mma` (kernels/attention/bwd_mma.cu) for f16/bf16 on sm_80+ with 16-byte
//! aligned rows and head_dim <= 128, and the SIMT `attn_bwd_dkdv` below for everything else.
//!
//! # Tensor-core tiles
//!
//! 4 warps, each owning 16 keys (BN = 64 keys a block); BM queries per tile: 64 for head_dim
//! <= 64, 32 up to 120 and 16 above, so that dK and dV (`head_dim` f32 registers together) plus
//! S^T and dP^T (`BM / 2` each) fit without spills. ptxas 12.9 (`__launch_bounds__(128, 1)`,
//! the ignored test `bwd_kernels_do_not_spill`): 152..248 registers on sm_80 and sm_90, zero
//! spills for every head_dim 8..=128; at head_dim 128 BM 32 spilled 24 bytes on sm_80. Shared memory: K, V, Q, dO as 16-bit rows of
//! `round_up(head_dim, 16) + 8`, the 16-bit dS^T tile and four per-query arrays
//! ([`MmaBwdTiles::smem_bytes`]).
//!
//! # Tiles
//!
//! SIMT, f32 arithmetic, 256 threads a block. Shared memory holds Q, dO (BM rows), K, V (BN
//! rows) as f32 and the P and dS tiles; registers hold each thread's dK and dV (dkdv kernel) or
//! dQ (dq kernel): 2 rows x ceil(HD / TC) columns each, every element an f32 hi/lo pair (the
//! summation order of bwd.cu, which keeps f32 gradients within twice the naive f32 error), at
//! most 2 x 2 x 8 x 2 = 64 f32. Shared memory stays under 99 KiB (what sm_86/sm_89 allow a
//! block; sm_80 allows 163 KiB, sm_90 227 KiB). Registers and shared memory as ptxas 12.9 reports them for f32/f16/bf16 on sm_80
//! and sm_90 (the `#[ignore]`d test `bwd_kernels_do_not_spill` in tests/gpu_bwd.rs; zero spills
//! and zero stack for every head_dim 8..=256 step 8):
//!
//! | head_dim  | BN (keys) | BM (queries) | TC | dkdv regs | dq regs | dynamic shared memory |
//! |-----------|-----------|--------------|----|-----------|---------|-----------------------|
//! | 8..=56    | 64        | 32           | 8  | 104..178  | 98..156 | 26.0 .. 62.0 KiB      |
//! | 64..=128  | 32        | 32           | 16 | 136..185  | 122..148| 42.8 .. 74.8 KiB      |
//! | 136..=256 | 16        | 16           | 32 | 118..168  | 91..126 | 37.4 .. 67.4 KiB      |
//!
//! TC is the number of threads along head_dim in the accumulation phases; a head_dim that TC
//! does not divide leaves the last column group partly idle. The tile kernels declare
//! `__launch_bounds__(256, 1)`, so ptxas never spills to reach a higher occupancy (see bwd.cu);
//! the delta pre-pass and the dq conversion use 28..32 registers.

use super::{GpuCall, module, unit_last_stride};
use crate::error::{AttentionError, Result};
use crate::support::gpu_head_dim;
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
    /// The tiles of `head_dim` (one the GPU kernels take, [`crate::supports`]).
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

/// The dK/dV kernel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BwdKernel {
    /// `attn_bwd_dkdv` (bwd.cu): f32 FMAs, every dtype and head_dim.
    Simt,
    /// `attn_bwd_dkdv_mma` (bwd_mma.cu): tensor cores, f16/bf16, sm_80+, head_dim <= 128.
    Mma,
}

impl BwdKernel {
    #[cfg(feature = "testing")]
    /// Short name for tables and `ATTUNE_ATTN_BWD_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            BwdKernel::Simt => "simt",
            BwdKernel::Mma => "mma",
        }
    }
}

/// Largest head_dim of the tensor-core dK/dV kernel.
pub const MMA_MAX_HEAD_DIM: usize = 128;

/// Tiles of the tensor-core dK/dV kernel (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmaBwdTiles {
    /// Queries per tile (a multiple of 16).
    pub bm: usize,
    /// Warps per block, 16 keys each.
    pub warps: usize,
}

impl MmaBwdTiles {
    /// The tiles of `head_dim`, or `None` above [`MMA_MAX_HEAD_DIM`].
    pub fn for_head_dim(head_dim: usize) -> Option<MmaBwdTiles> {
        match head_dim {
            0..=64 => Some(MmaBwdTiles { bm: 64, warps: 4 }),
            65..=120 => Some(MmaBwdTiles { bm: 32, warps: 4 }),
            121..=MMA_MAX_HEAD_DIM => Some(MmaBwdTiles { bm: 16, warps: 4 }),
            _ => None,
        }
    }

    /// Keys per block.
    pub fn bn(&self) -> usize {
        16 * self.warps
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        (32 * self.warps) as u32
    }

    /// Dynamic shared memory in bytes (the layout in bwd_mma.cu).
    pub fn smem_bytes(&self, head_dim: usize) -> u32 {
        let lds = head_dim.div_ceil(16) * 16 + 8;
        let (bm, bn) = (self.bm, self.bn());
        ((2 * bn + 2 * bm) * lds * 2 + bn * (bm + 8) * 2 + 4 * bm * 4) as u32
    }

    fn defines(&self) -> [(&'static str, u32); 2] {
        [("BM", self.bm as u32), ("WARPS", self.warps as u32)]
    }
}

/// The entry of the tensor-core dK/dV kernel.
pub const MMA_ENTRY: &str = "attn_bwd_dkdv_mma";

/// The dK/dV kernel for a dtype, compute capability and head_dim, with 16-byte aligned q, k,
/// v and dout rows or not: the one rule the dispatcher and `bench-attn`'s static report follow.
pub fn pick_backward(dtype: DType, arch: u32, aligned16: bool, head_dim: usize) -> BwdKernel {
    let mma = matches!(dtype, DType::F16 | DType::BF16)
        && arch >= 80
        && aligned16
        && gpu_head_dim(head_dim)
        && head_dim <= MMA_MAX_HEAD_DIM;
    if mma { BwdKernel::Mma } else { BwdKernel::Simt }
}

/// The tensor-core module of one dtype and head_dim, when the kernel takes them.
fn mma_module(dtype: DType, head_dim: usize) -> Option<(ModuleSpec, MmaBwdTiles)> {
    if !matches!(dtype, DType::F16 | DType::BF16) || !gpu_head_dim(head_dim) {
        return None;
    }
    let tiles = MmaBwdTiles::for_head_dim(head_dim)?;
    module("bwd_mma.cu", dtype, head_dim, &tiles.defines()).ok().map(|spec| (spec, tiles))
}

/// The backward module of one dtype and head_dim.
fn bwd_module(dtype: DType, head_dim: usize) -> Result<(ModuleSpec, Tiles)> {
    let tiles = Tiles::for_head_dim(head_dim);
    Ok((module("bwd.cu", dtype, head_dim, &tiles.defines())?, tiles))
}

/// A step of the backward, in launch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BwdStep {
    /// `attn_bwd_dot`: `delta = rowsum(dout * out)` per query row.
    Delta,
    /// The dK/dV kernel of the plan's [`BwdKernel`] (adding dQ by f32 atomics unless
    /// deterministic).
    DkDv,
    /// `attn_bwd_dq`: the deterministic dQ kernel.
    Dq,
    /// `attn_bwd_dq_convert`: the f32 dQ accumulator into the input dtype (atomic dQ, f16/bf16).
    DqConvert,
}

/// One launch of a [`BwdPlan`].
#[derive(Debug, Clone, PartialEq)]
pub struct BwdLaunch {
    /// What it computes.
    pub step: BwdStep,
    /// Its module.
    pub module: ModuleSpec,
    /// The entry point.
    pub entry: &'static str,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, bytes.
    pub smem: u32,
    /// What one block covers along grid x: rows (delta), keys (dK/dV), queries (dQ) or
    /// elements (conversion).
    pub per_block: usize,
    /// The one arch the module is built for (`Some` for the tensor-core kernel, launched on
    /// sm_80+ only), `None` when the same module serves every arch.
    pub arch: Option<u32>,
}

/// The backward's kernel plan: the launches [`backward_with`] runs, in order, and what
/// `cargo xtask build-kernels` and `bench-attn`'s static report list. One value, so the
/// variant list cannot drift from what runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BwdPlan {
    /// The dK/dV kernel kind.
    pub kernel: BwdKernel,
    /// The launches in order.
    pub launches: Vec<BwdLaunch>,
}

impl BwdPlan {
    /// Whether the plan runs `step`.
    pub fn runs(&self, step: BwdStep) -> bool {
        self.launches.iter().any(|l| l.step == step)
    }
}

/// The backward plan of a call in `dtype` at `head_dim` on an `arch` GPU, with 16-byte
/// aligned q, k, v and dout rows or not, deterministic dQ or not. The dK/dV kernel is
/// `forced` or, with `None`, [`pick_backward`]'s; forcing [`BwdKernel::Mma`] where it cannot
/// run is an error, not a silent fallback.
pub fn plan(
    dtype: DType,
    head_dim: usize,
    arch: u32,
    aligned16: bool,
    deterministic: bool,
    forced: Option<BwdKernel>,
) -> Result<BwdPlan> {
    let auto = pick_backward(dtype, arch, aligned16, head_dim);
    let kernel = match forced {
        None => auto,
        Some(BwdKernel::Mma) if auto != BwdKernel::Mma => {
            return Err(AttentionError::Param(format!(
                "the tensor-core backward (bwd_mma) needs f16/bf16, sm_80+, head_dim a multiple of 8 up to \
                 {MMA_MAX_HEAD_DIM} and 16-byte aligned q, k, v and dout rows; got {dtype}, sm_{arch}, head_dim \
                 {head_dim}, aligned {aligned16}; use BwdKernel::Simt"
            )));
        }
        Some(k) => k,
    };
    let (spec, tiles) = bwd_module(dtype, head_dim)?;
    let smem = tiles.shared_bytes(head_dim);
    let simt = |step, entry, threads, smem, per_block| BwdLaunch {
        step,
        module: spec.clone(),
        entry,
        threads,
        smem,
        per_block,
        arch: None,
    };
    let mut launches = vec![simt(BwdStep::Delta, "attn_bwd_dot", EW_THREADS, 0, (EW_THREADS / 32) as usize)];
    launches.push(match kernel {
        BwdKernel::Simt => simt(BwdStep::DkDv, "attn_bwd_dkdv", tiles.threads, smem, tiles.bn as usize),
        BwdKernel::Mma => {
            let (module, mt) = mma_module(dtype, head_dim).ok_or_else(|| {
                AttentionError::Param(format!("no tensor-core backward for {dtype} at head_dim {head_dim}"))
            })?;
            let (threads, smem, per_block) = (mt.threads(), mt.smem_bytes(head_dim), mt.bn());
            BwdLaunch { step: BwdStep::DkDv, module, entry: MMA_ENTRY, threads, smem, per_block, arch: Some(arch) }
        }
    });
    if deterministic {
        launches.push(simt(BwdStep::Dq, "attn_bwd_dq", tiles.threads, smem, tiles.bm as usize));
    } else if dtype != DType::F32 {
        // f32 atomics accumulate straight into an f32 dq; other dtypes go through dq_accum.
        launches.push(simt(BwdStep::DqConvert, "attn_bwd_dq_convert", EW_THREADS, 0, EW_THREADS as usize));
    }
    Ok(BwdPlan { kernel, launches })
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

#[cfg(feature = "testing")]
/// Gradients `(dq, dk, dv)` of the attention of `call`, given the forward's `out`
/// (q's shape and dtype, or f32: the unrounded output of an f16/bf16 forward, which the
/// `rowsum(dout * out)` pre-pass then reads) and `lse` (`(batch, heads_q, seq_q)`, f32), and the output gradient
/// `dout` (q's shape and dtype, any strides with unit stride on head_dim). The results are
/// contiguous, in the input dtype, dq shaped like q and dk, dv like k and v.
///
/// `deterministic`: dQ by a separate kernel without atomics, so two runs give bitwise-equal
/// gradients (a second score recomputation); otherwise the dK/dV kernel adds dQ with f32
/// atomics, whose order varies between runs.
///
/// The dK/dV kernel is [`pick_backward`]'s; [`backward_with`] chooses it explicitly.
pub fn backward(
    call: &GpuCall,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    deterministic: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    backward_with(call, out, lse, dout, deterministic, None)
}

/// [`backward`] with the dK/dV kernel given (`None`: [`pick_backward`]). Asking for
/// [`BwdKernel::Mma`] where it cannot run is an error, not a silent fallback.
pub fn backward_with(
    call: &GpuCall,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    deterministic: bool,
    kernel: Option<BwdKernel>,
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
    call.check_supported()?;

    // Inputs the kernels read as contiguous rows: out and lse (dout only needs unit stride on
    // head_dim). Kept alive until the launches are done.
    let out = if out.is_contiguous() { out.clone() } else { out.contiguous()? };
    let lse = if lse.is_contiguous() { lse.clone() } else { lse.contiguous()? };
    let dout = unit_last_stride(dout)?;
    let delta = Tensor::uninit_on_gpu("attention backward", rows, DType::F32, device)?;
    // dK/dV are zeroed: keys outside every segment (key padding) get no gradient.
    let (dk, dv) = (zeros(&k_dims, dtype)?, zeros(&k_dims, dtype)?);
    let dout_strides = {
        let s = dout.stride();
        [s[0] as i64, s[1] as i64, s[2] as i64]
    };
    let dout_aligned = super::rows_aligned16(call.address(&dout)?, dout_strides, dtype.size_in_bytes() as i64);
    let plan = plan(dtype, pb.head_dim, call.arch(), call.aligned16 && dout_aligned, deterministic, kernel)?;
    // The deterministic dQ kernel writes every dq row; atomics add into a zeroed dq (f32) or
    // a zeroed f32 accumulator that the plan's conversion step rounds into dq.
    let (dq, dq_accum) = if deterministic {
        (Tensor::uninit_on_gpu("attention backward", q_dims, dtype, device)?, None)
    } else if plan.runs(BwdStep::DqConvert) {
        let acc = zeros(&q_dims, DType::F32)?;
        (Tensor::uninit_on_gpu("attention backward", q_dims, dtype, device)?, Some(acc))
    } else {
        (zeros(&q_dims, dtype)?, None)
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
    [p.dout_batch_stride, p.dout_head_stride, p.dout_row_stride] = dout_strides;
    let args = vec![KernelArg::pod(&p)];
    let nrows = pb.batch * pb.heads_q * pb.seq_q;
    let segs = extent("the number of segments", pb.segments.len(), 65535)?;
    for l in &plan.launches {
        let grid = match l.step {
            BwdStep::Delta => ew_grid(nrows, l.per_block),
            BwdStep::DkDv => Dim3::new(
                extent("the key tiles", max_k.div_ceil(l.per_block), i32::MAX as usize)?,
                extent("heads_kv", pb.heads_kv, 65535)?,
                segs,
            ),
            BwdStep::Dq => Dim3::new(
                extent("the query tiles", max_q.div_ceil(l.per_block), i32::MAX as usize)?,
                extent("heads_q", pb.heads_q, 65535)?,
                segs,
            ),
            BwdStep::DqConvert => ew_grid(nrows * pb.head_dim, l.per_block),
        };
        let launch = LaunchPlan::new(l.module.clone(), l.entry, grid, Dim3::x(l.threads), args.clone());
        call.launch(&launch.with_shared(l.smem))?;
    }
    Ok((dq, dk, dv))
}
