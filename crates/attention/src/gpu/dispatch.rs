//! Which attention kernel runs a call on a GPU device, by dtype, arch and shape.
//!
//! Forward:
//! - few query rows against many keys (decoding: every segment's `q_len <= 16`, keys >= 512):
//!   the split-KV kernel when [`fwd_split::choose_splits`] finds it worth it;
//! - f16/bf16 on sm_80+ with 16-byte aligned rows: the tensor-core kernel (`fwd_mma.cu`);
//! - otherwise (f32, older GPUs, unaligned views): the SIMT kernel, in full f32 accuracy.
//!
//! Backward: the launches of [`bwd::plan`]: the `bwd.cu` pre-pass, then the dK/dV kernel of
//! [`bwd::pick_backward`] (the tensor-core `bwd_mma.cu` for f16/bf16 on sm_80+ with aligned
//! rows and head_dim <= 128, the SIMT `bwd.cu` kernel otherwise), dQ by f32 atomics or, with
//! `AttentionParams::deterministic`, by a separate atomic-free dQ kernel.
//! `ATTUNE_ATTN_BWD_KERNEL=simt|mma` forces the dK/dV kernel.
//!
//! `ATTUNE_ATTN_KERNEL=simt|mma|split` forces a forward kernel (tests, benchmarks); a forced
//! kernel that cannot take the call is an error rather than a silent fallback.

use super::{GpuCall, bwd, fwd_mma, fwd_simt, fwd_split};
use crate::error::{AttentionError, Result};
use crate::flash::{AttentionGrads, AttentionOutput};
use crate::params::{AttentionParams, Problem, validate};
use attune_tensor::{DType, Tensor};

/// A forward kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwdKernel {
    /// `fwd_simt.cu`.
    Simt,
    /// `fwd_mma.cu`.
    Mma,
    /// `fwd_split.cu` with this many key splits.
    Split(usize),
}

impl FwdKernel {
    #[cfg(feature = "testing")]
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            FwdKernel::Simt => "simt",
            FwdKernel::Mma => "mma",
            FwdKernel::Split(_) => "split",
        }
    }
}

/// Streaming multiprocessors assumed when sizing split-KV on the emulator (an A100's 108;
/// the emulator runs whatever grid it gets, so this only has to be realistic).
const EMU_SMS: usize = 108;

fn forced() -> Result<Option<&'static str>> {
    match std::env::var("ATTUNE_ATTN_KERNEL").ok().as_deref() {
        None | Some("") | Some("auto") => Ok(None),
        Some("simt") => Ok(Some("simt")),
        Some("mma") => Ok(Some("mma")),
        Some("split") => Ok(Some("split")),
        Some(other) => Err(AttentionError::Param(format!(
            "ATTUNE_ATTN_KERNEL={other} is not a forward kernel; use simt, mma, split or auto"
        ))),
    }
}

fn forced_backward() -> Result<Option<bwd::BwdKernel>> {
    match std::env::var("ATTUNE_ATTN_BWD_KERNEL").ok().as_deref() {
        None | Some("") | Some("auto") => Ok(None),
        Some("simt") => Ok(Some(bwd::BwdKernel::Simt)),
        Some("mma") => Ok(Some(bwd::BwdKernel::Mma)),
        Some(other) => Err(AttentionError::Param(format!(
            "ATTUNE_ATTN_BWD_KERNEL={other} is not a backward kernel; use simt, mma or auto"
        ))),
    }
}

/// The forward kernel for a geometry, dtype, compute capability and SM count, with 16-byte
/// aligned rows or not (no `ATTUNE_ATTN_KERNEL` override): the one rule both the dispatcher
/// and the static report of `bench-attn` follow.
pub fn pick_forward(pb: &Problem, dtype: DType, arch: u32, aligned16: bool, sms: usize) -> FwdKernel {
    let splits = fwd_split::choose_splits(pb, sms);
    if splits > 1 {
        FwdKernel::Split(splits)
    } else if matches!(dtype, DType::F16 | DType::BF16) && arch >= 80 && aligned16 {
        FwdKernel::Mma
    } else {
        FwdKernel::Simt
    }
}

/// The forward kernel a call runs: [`pick_forward`] for its device, or the forced one.
pub fn choose_forward(call: &GpuCall) -> Result<FwdKernel> {
    let sms = call.dev.cuda_executor().map_or(EMU_SMS, |c| c.sm_count().max(1));
    Ok(match forced()? {
        Some("simt") => FwdKernel::Simt,
        Some("mma") => FwdKernel::Mma,
        Some(_) => FwdKernel::Split(fwd_split::choose_splits(&call.problem, sms).max(2)),
        None => pick_forward(&call.problem, call.dtype, call.arch(), call.aligned16, sms),
    })
}

/// Runs one forward kernel family on a prepared call; with `keep_f32` and f16/bf16 inputs the
/// kernel also writes the output before rounding, in f32 (see [`forward_saving_f32`]).
pub(crate) fn run_forward(
    call: &mut GpuCall,
    kernel: FwdKernel,
    keep_f32: bool,
) -> Result<(AttentionOutput, Option<Tensor>)> {
    let (out, lse) = call.alloc_forward_outputs()?;
    let out_f32 = if keep_f32 && matches!(call.dtype, DType::F16 | DType::BF16) {
        let t = Tensor::uninit_on_gpu("attention", out.dims().to_vec(), DType::F32, call.device)?;
        call.params.out_f32 = call.address(&t)?;
        Some(t)
    } else {
        None
    };
    let run = if call.problem.segments.iter().any(|s| s.q_len > 0) {
        match kernel {
            FwdKernel::Simt => fwd_simt::launch_fwd_simt(call, &out, &lse),
            FwdKernel::Mma => fwd_mma::launch_fwd_mma(call, &out, &lse),
            FwdKernel::Split(n) => fwd_split::launch_fwd_split(call, &out, &lse, n),
        }
    } else {
        Ok(())
    };
    call.params.out_f32 = 0;
    run?;
    Ok((AttentionOutput { out, lse }, out_f32))
}

/// Fused attention forward on the inputs' GPU device (`Cuda` or `Emu`), choosing the kernel.
/// Not differentiable by itself: [`crate::attention`] wraps it with autograd.
pub fn forward(q: &Tensor, k: &Tensor, v: &Tensor, params: &AttentionParams) -> Result<AttentionOutput> {
    Ok(forward_saving_f32(q, k, v, params, false)?.0)
}

/// [`forward`]; with `keep_f32` and f16/bf16 inputs it also returns the output before rounding,
/// in f32, what the differentiable op and the case checker give [`backward`] as `out` (the
/// reason is on `crate::flash`'s `forward_saving_f32`).
pub(crate) fn forward_saving_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    params: &AttentionParams,
    keep_f32: bool,
) -> Result<(AttentionOutput, Option<Tensor>)> {
    let pb = validate(q, k, v, params)?;
    let mut call = GpuCall::new(q, k, v, &pb)?;
    let kernel = choose_forward(&call)?;
    run_forward(&mut call, kernel, keep_f32)
}

/// The gradients of q, k and v on the inputs' GPU device, from the forward's `out` (q's
/// dtype, or f32: the output of an f16/bf16 forward before rounding, which
/// [`crate::attention`] keeps for its backward) and `lse`.
pub fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    params: &AttentionParams,
) -> Result<AttentionGrads> {
    // bwd::backward checks out, lse and dout against q (shape, dtype, device).
    let pb: Problem = validate(q, k, v, params)?;
    let call = GpuCall::new(q, k, v, &pb)?;
    let (dq, dk, dv) = bwd::backward_with(&call, out, lse, dout, params.deterministic, forced_backward()?)?;
    Ok(AttentionGrads { dq, dk, dv })
}
