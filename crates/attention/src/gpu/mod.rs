//! The CUDA attention kernels (kernels/attention/) on `Device::Cuda` and `Device::Emu`.
//!
//! Every kernel takes one [`abi::AttnParams`] by value. [`GpuCall`] fills it from the validated
//! [`Problem`] and the inputs' device addresses and strides, uploads the segment table, and
//! keeps it alive for the launches of one call. The kernel families:
//! - `fwd_simt.cu`: f32 (and any dtype on GPUs older than sm_80), SIMT, full f32 accuracy;
//! - `fwd_mma.cu`: f16/bf16 on sm_80+, FlashAttention-2 style with mma.sync, ldmatrix, cp.async;
//! - `fwd_split.cu`: split-KV for few query rows against long keys, plus the lse combine;
//! - `bwd.cu`: the backward (pre-pass, dK/dV kernel, dQ by atomics or deterministic).

pub mod abi;
pub mod bwd;
mod dispatch;
pub mod fwd_mma;
pub mod fwd_simt;
pub mod fwd_split;

pub(crate) use dispatch::forward_saving_f32;
pub use dispatch::{FwdKernel, backward, choose_forward, forward, pick_forward};

use crate::error::{AttentionError, Result};
use crate::params::Problem;
use abi::AttnParams;
use attune_cuda::{Backend, GpuBuffer, GpuDevice, KernelArg, LaunchPlan, ModuleSpec};
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

    /// The kernel-argument list of a launch with these params.
    pub fn args(&self) -> Vec<KernelArg> {
        vec![KernelArg::pod(&self.params)]
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

/// An entry of a module: `(name, block threads, dynamic shared bytes)`.
pub type EntryLaunch = (String, u32, u32);
/// A module variant with its entries.
pub type Variant = (ModuleSpec, Vec<EntryLaunch>);
/// A module variant and the one arch it is for (`None`: every arch).
pub type ArchVariant = (ModuleSpec, Vec<EntryLaunch>, Option<u32>);
/// A planned launch: a label (`forward: mma`, `backward`), the module and its entries.
pub type PlannedVariant = (String, ModuleSpec, Vec<EntryLaunch>);

fn define(spec: &ModuleSpec, name: &str) -> usize {
    spec.defines.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// Adds each entry's dynamic shared memory, as its launcher sizes it, to a family's variants.
fn with_smem(family: &str, variants: Vec<(ModuleSpec, Vec<(String, u32)>)>) -> Vec<Variant> {
    variants
        .into_iter()
        .map(|(spec, entries)| {
            let hd = define(&spec, "HD");
            let smem = |entry: &str| -> u32 {
                match (family, entry) {
                    ("simt", _) => fwd_simt::SimtConfig::forward(hd).shared_bytes() as u32,
                    ("split", "attn_fwd_split") => fwd_simt::SimtConfig::split(hd).shared_bytes() as u32,
                    ("mma", _) => {
                        let t = fwd_mma::MmaTiles {
                            bm: define(&spec, "BM"),
                            bn: define(&spec, "BN"),
                            warps: define(&spec, "WARPS"),
                        };
                        t.smem_bytes(hd) as u32
                    }
                    _ => 0,
                }
            };
            let entries = entries.into_iter().map(|(e, t)| (e.clone(), t, smem(&e))).collect();
            (spec, entries)
        })
        .collect()
}

/// Adds the launches of `plan` whose arch tag `keep` accepts to `out`: one variant per
/// (module, arch), entries in first-launch order.
fn add_plan(out: &mut Vec<ArchVariant>, plan: &bwd::BwdPlan, keep: impl Fn(Option<u32>) -> bool) {
    for l in plan.launches.iter().filter(|l| keep(l.arch)) {
        let entry = (l.entry.to_string(), l.threads, l.smem);
        match out.iter_mut().find(|(s, _, a)| *s == l.module && *a == l.arch) {
            Some((_, entries, _)) if entries.iter().any(|(e, _, _)| *e == entry.0) => {}
            Some((_, entries, _)) => entries.push(entry),
            None => out.push((l.module.clone(), vec![entry], l.arch)),
        }
    }
}

/// Every attention module variant the dispatcher can launch for `head_dims` on `archs`, each
/// with the one arch it is for (`None`: the same module on every arch), for `cargo xtask
/// build-kernels`. The backward's come from its plans ([`bwd::plan`]) for every dtype, kernel
/// kind and dQ mode.
pub fn kernel_variants(head_dims: &[usize], archs: &[u32]) -> Vec<ArchVariant> {
    let all = [DType::F32, DType::F16, DType::BF16];
    let mut out: Vec<ArchVariant> = Vec::new();
    for v in [
        with_smem("simt", fwd_simt::simt_variants(&all, head_dims)),
        with_smem("split", fwd_split::split_variants(&all, head_dims)),
    ] {
        out.extend(v.into_iter().map(|(s, e)| (s, e, None)));
    }
    let supported = || head_dims.iter().copied().filter(|&d| crate::support::gpu_head_dim(d));
    // The SIMT backward (every arch): unaligned rows take it on any GPU.
    for dtype in all {
        for d in supported() {
            for deterministic in [true, false] {
                if let Ok(p) = bwd::plan(dtype, d, 0, false, deterministic, None) {
                    add_plan(&mut out, &p, |a| a.is_none());
                }
            }
        }
    }
    for &arch in archs {
        for (s, e) in with_smem("mma", fwd_mma::mma_variants(head_dims, &[arch])) {
            out.push((s, e, Some(arch)));
        }
        // The arch-specific launches (the tensor-core dK/dV kernel) of aligned calls.
        for dtype in all {
            for d in supported() {
                if let Ok(p) = bwd::plan(dtype, d, arch, true, false, None) {
                    add_plan(&mut out, &p, |a| a == Some(arch));
                }
            }
        }
    }
    out
}

/// The kernels a call of geometry `pb` in `dtype` would launch on an `arch` GPU with `sms`
/// multiprocessors (16-byte aligned inputs assumed), labelled `forward: simt|mma|split` or
/// `backward`: what `cargo xtask bench-attn --backend cuda` reports statically without a GPU.
pub fn planned_variants(
    pb: &Problem,
    dtype: DType,
    arch: u32,
    sms: usize,
    with_backward: bool,
    deterministic: bool,
) -> Result<Vec<PlannedVariant>> {
    let code = dtype_code(dtype)?.to_string();
    let d = [pb.head_dim];
    let kernel = pick_forward(pb, dtype, arch, true, sms);
    let fwd = match kernel {
        FwdKernel::Split(_) => with_smem("split", fwd_split::split_variants(&[dtype], &d)),
        FwdKernel::Mma => with_smem("mma", fwd_mma::mma_variants(&d, &[arch])),
        FwdKernel::Simt => with_smem("simt", fwd_simt::simt_variants(&[dtype], &d)),
    };
    let kind = kernel.name();
    let of_dtype = |s: &ModuleSpec| s.defines.iter().any(|(k, v)| k == "ATTN_DTYPE" && *v == code);
    let mut out: Vec<_> =
        fwd.into_iter().filter(|(s, _)| of_dtype(s)).map(|(s, e)| (format!("forward: {kind}"), s, e)).collect();
    if with_backward && crate::support::gpu_head_dim(pb.head_dim) {
        // The plan the backward runs, one row per module: the SIMT module's launches, then the
        // tensor-core dK/dV kernel's when the plan takes it.
        let plan = bwd::plan(dtype, pb.head_dim, arch, true, deterministic, None)?;
        let mut modules: Vec<ArchVariant> = Vec::new();
        add_plan(&mut modules, &plan, |_| true);
        for (s, e, a) in modules {
            let label = if a.is_some() { format!("backward: {}", plan.kernel.name()) } else { "backward".into() };
            out.push((label, s, e));
        }
    }
    if out.is_empty() {
        // No kernel: say why with the rule every caller asks (a GPU device stands for the arch).
        crate::supports(Device::Cuda(0), dtype, pb.head_dim)?;
        return Err(AttentionError::Shape(format!("no attention kernel for head_dim {} in {dtype}", pb.head_dim)));
    }
    Ok(out)
}
