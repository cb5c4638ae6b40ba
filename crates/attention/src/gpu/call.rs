//! [`GpuCall`]: one attention call prepared for a GPU device (the filled [`AttnParams`], the
//! uploaded segment table), and the helpers every launcher shares.

use super::abi::AttnParams;
use crate::error::{AttentionError, Result};
use crate::params::Problem;
use attune_cuda::{Backend, GpuBuffer, GpuDevice, LaunchPlan, ModuleSpec};
use attune_tensor::{DType, Device, Tensor};

/// One attention call on a GPU device: the runtime device, the filled parameter struct, and
/// the device segment table it points at.
pub struct GpuCall {
    /// The runtime device of q, k and v.
    pub dev: GpuDevice,
    /// Sizes, masks, strides and the q/k/v addresses; kernels' outputs are set by each launcher.
    pub params: AttnParams,
    /// The validated problem.
    pub problem: Problem,
    /// The input dtype.
    pub dtype: DType,
    /// The tensor device.
    pub device: Device,
    /// Whether q, k and v start 16-byte aligned with row strides that keep every row 16-byte
    /// aligned (what `cp.async` 16-byte copies need).
    pub aligned16: bool,
    // The tensors whose addresses the params hold (kept alive for the call).
    _inputs: Vec<Tensor>,
    _segments: GpuBuffer,
}

/// The three strides (batch, head, row) of a 4-d tensor with unit stride on the last dim.
fn strides3(t: &Tensor) -> [i64; 3] {
    let s = t.stride();
    [s[0] as i64, s[1] as i64, s[2] as i64]
}

/// `t` itself when its last dim has unit stride (or size 1), else a contiguous copy.
pub fn unit_last_stride(t: &Tensor) -> Result<Tensor> {
    let last = t.rank().saturating_sub(1);
    if t.dims().get(last).copied().unwrap_or(1) <= 1 || t.stride().get(last) == Some(&1) {
        Ok(t.clone())
    } else {
        Ok(t.contiguous()?)
    }
}

/// Whether rows at `addr` with (batch, head, row) strides `s` (elements of `esize` bytes) are
/// 16-byte aligned everywhere: what cp.async and ldmatrix in the tensor-core kernels need.
pub fn rows_aligned16(addr: u64, s: [i64; 3], esize: i64) -> bool {
    addr.is_multiple_of(16) && s.iter().all(|x| (x * esize) % 16 == 0)
}

impl GpuCall {
    /// Prepares a call: q, k, v must be on one GPU device (validated with `pb`).
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, pb: &Problem) -> Result<GpuCall> {
        let (q, k, v) = (unit_last_stride(q)?, unit_last_stride(k)?, unit_last_stride(v)?);
        let (dev, qa) = q.gpu_address("attention")?;
        let (_, ka) = k.gpu_address("attention")?;
        let (_, va) = v.gpu_address("attention")?;
        let table = AttnParams::segment_table(pb);
        let bytes: &[u8] = bytemuck::cast_slice(&table);
        // A zero-length table still needs a valid address.
        let segments = dev.htod(if bytes.is_empty() { &[0u8; 4] } else { bytes }).map_err(gpu_err)?;
        let mut params = AttnParams::from_problem(pb);
        params.q = qa;
        params.k = ka;
        params.v = va;
        params.segments = segments.device_ptr(0);
        [params.q_batch_stride, params.q_head_stride, params.q_row_stride] = strides3(&q);
        [params.k_batch_stride, params.k_head_stride, params.k_row_stride] = strides3(&k);
        [params.v_batch_stride, params.v_head_stride, params.v_row_stride] = strides3(&v);
        let esize = q.dtype().size_in_bytes() as i64;
        let aligned = |addr: u64, s: [i64; 3]| rows_aligned16(addr, s, esize);
        let aligned16 = aligned(qa, strides3(&q))
            && aligned(ka, strides3(&k))
            && aligned(va, strides3(&v))
            && (pb.head_dim * q.dtype().size_in_bytes()).is_multiple_of(16);
        Ok(GpuCall {
            dev,
            params,
            problem: pb.clone(),
            dtype: q.dtype(),
            device: q.device(),
            aligned16,
            _inputs: vec![q, k, v],
            _segments: segments,
        })
    }

    /// The compute capability kernels are chosen for: the GPU's, or 80 on the emulator (which
    /// runs the sm_80 tensor-core and async-copy instructions).
    pub fn arch(&self) -> u32 {
        match self.dev.backend() {
            Backend::Emu => 80,
            Backend::Cuda(_) => self.dev.cuda_executor().map_or(80, |c| c.compute_capability()),
        }
    }

    /// Uninitialised `out` (q's shape, contiguous, input dtype) and `lse` (`(batch, heads_q,
    /// seq_q)`, f32) on the call's device, for a forward kernel that writes every row.
    pub fn alloc_forward_outputs(&self) -> Result<(Tensor, Tensor)> {
        let pb = &self.problem;
        let out =
            Tensor::uninit_on_gpu("attention", [pb.batch, pb.heads_q, pb.seq_q, pb.head_dim], self.dtype, self.device)?;
        let lse = Tensor::uninit_on_gpu("attention", [pb.batch, pb.heads_q, pb.seq_q], DType::F32, self.device)?;
        Ok((out, lse))
    }

    /// Errors unless the kernels take the call's dtype and head_dim (the one rule,
    /// [`crate::supports`]).
    pub fn check_supported(&self) -> Result<()> {
        Ok(crate::supports(self.device, self.dtype, self.problem.head_dim)?)
    }

    /// The device address of a contiguous GPU tensor (an output or workspace of this call).
    pub fn address(&self, t: &Tensor) -> Result<u64> {
        Ok(t.gpu_address("attention")?.1)
    }

    #[cfg(feature = "testing")]
    /// The kernel-argument list of a launch with these params.
    pub fn args(&self) -> Vec<attune_cuda::KernelArg> {
        vec![attune_cuda::KernelArg::pod(&self.params)]
    }

    /// Runs `plan` on the call's device.
    pub fn launch(&self, plan: &LaunchPlan) -> Result<()> {
        self.dev.launch(plan).map_err(gpu_err)
    }
}

/// The `ATTN_DTYPE` define of a dtype (0 f32, 1 f16, 2 bf16).
pub fn dtype_code(dtype: DType) -> Result<u32> {
    match dtype {
        DType::F32 => Ok(0),
        DType::F16 => Ok(1),
        DType::BF16 => Ok(2),
        other => Err(AttentionError::Shape(format!(
            "the attention kernels take f32, f16 or bf16, got {other}; convert with to_dtype (f64 runs on the CPU)"
        ))),
    }
}

/// The module of an attention kernel family for one dtype and head_dim, with extra defines.
pub fn module(file: &str, dtype: DType, head_dim: usize, extra: &[(&str, u32)]) -> Result<ModuleSpec> {
    let mut defines =
        vec![("ATTN_DTYPE".to_string(), dtype_code(dtype)?.to_string()), ("HD".to_string(), head_dim.to_string())];
    defines.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(ModuleSpec::new(format!("attention/{file}"), defines))
}

/// Converts a runtime error into the attention error.
pub fn gpu_err(e: attune_cuda::Error) -> AttentionError {
    AttentionError::Tensor(attune_tensor::Error::Gpu { op: "attention", source: Box::new(e) })
}
