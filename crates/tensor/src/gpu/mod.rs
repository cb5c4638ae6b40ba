//! The GPU backend of attune-tensor: `Device::Cuda` and `Device::Emu` storage and the launch
//! plans of every op (docs/architecture.md). Each op builds an [`attune_cuda::LaunchPlan`] from plain
//! Rust and hands it to the device; the same plan runs on a GPU (NVRTC + driver) or on the
//! emulator, so the emulator parity tests cover the GPU code path. Kernels live in
//! kernels/tensor/.

mod blas;
mod elementwise;
mod index;
mod loss;
mod meta;
mod norm;
mod random;
mod reduce;
mod softmax;

pub(crate) use blas::gemm;
pub(crate) use elementwise::*;
pub(crate) use index::{gather, index_add, index_select, one_hot, scatter_add};
pub(crate) use loss::{CeReduction, cross_entropy, cross_entropy_backward};
pub(crate) use meta::StridedMeta;
pub(crate) use norm::{norm_backward, norm_forward};
pub(crate) use random::{bernoulli, dropout, rand};
pub(crate) use reduce::{backward_helper as reduce_backward_helper, reduce};
pub(crate) use softmax::softmax;

use crate::storage::CpuStorage;
use crate::{DType, Device, Error, Result, Tensor};
use attune_cuda::{Backend, GpuBuffer, GpuDevice, KernelArg, LaunchPlan, ModuleSpec};

/// Threads per block of the element-wise and row kernels.
pub(crate) const THREADS: u32 = 256;
/// Upper bound on blocks of grid-stride kernels (enough to fill any current GPU).
pub(crate) const MAX_BLOCKS: usize = 4096;

/// A buffer on a GPU or the emulator holding `len` elements of `dtype`.
#[derive(Debug)]
pub struct GpuStorage {
    pub(crate) buf: GpuBuffer,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
}

/// The attune-cuda backend of a tensor device.
pub(crate) fn backend_of(device: Device) -> Option<Backend> {
    match device {
        Device::Cpu => None,
        Device::Cuda(i) => Some(Backend::Cuda(i)),
        Device::Emu => Some(Backend::Emu),
    }
}

/// The tensor device of a backend.
pub(crate) fn device_of(backend: Backend) -> Device {
    match backend {
        Backend::Cuda(i) => Device::Cuda(i),
        Backend::Emu => Device::Emu,
    }
}

/// Converts a runtime error into the tensor error of `op`.
pub(crate) fn gpu_err(op: &'static str) -> impl FnOnce(attune_cuda::Error) -> Error {
    move |source| Error::Gpu { op, source: Box::new(source) }
}

/// The runtime device behind a tensor device.
pub(crate) fn gpu_device(op: &'static str, device: Device) -> Result<GpuDevice> {
    let backend = backend_of(device).ok_or_else(|| Error::invalid(op, "the CPU is not a GPU device".to_string()))?;
    GpuDevice::get(backend).map_err(|e| match e {
        attune_cuda::Error::NoGpu { why } => Error::DeviceNotAvailable {
            op,
            device,
            why: format!("{why}; use Device::Cpu, or Device::Emu to run the GPU kernels on the CPU"),
        },
        other => Error::Gpu { op, source: Box::new(other) },
    })
}

impl GpuStorage {
    /// The device buffer itself: its address and stream, for libraries that work on device
    /// memory directly (NCCL's all-reduce of gradients, crates/lab/src/distributed.rs).
    pub fn buffer(&self) -> &GpuBuffer {
        &self.buf
    }

    /// The tensor device holding the buffer.
    pub fn device(&self) -> Device {
        device_of(self.buf.device().backend())
    }

    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The runtime device.
    pub(crate) fn gpu(&self) -> &GpuDevice {
        self.buf.device()
    }

    /// Uninitialised storage for `len` elements.
    pub(crate) fn alloc(op: &'static str, dev: &GpuDevice, dtype: DType, len: usize) -> Result<GpuStorage> {
        let buf = dev.alloc(len * dtype.size_in_bytes()).map_err(gpu_err(op))?;
        Ok(GpuStorage { buf, dtype, len })
    }

    /// Zeroed storage for `len` elements.
    pub(crate) fn zeros(op: &'static str, dev: &GpuDevice, dtype: DType, len: usize) -> Result<GpuStorage> {
        let buf = dev.alloc_zeroed(len * dtype.size_in_bytes()).map_err(gpu_err(op))?;
        Ok(GpuStorage { buf, dtype, len })
    }

    /// Copies a host buffer to the device.
    pub(crate) fn upload(op: &'static str, dev: &GpuDevice, cpu: &CpuStorage) -> Result<GpuStorage> {
        let bytes: &[u8] = crate::cpu_storage_apply!(cpu, v => bytemuck::cast_slice(v.as_slice()));
        let buf = dev.htod(bytes).map_err(gpu_err(op))?;
        Ok(GpuStorage { buf, dtype: cpu.dtype(), len: cpu.len() })
    }

    /// Copies the whole buffer to the host.
    pub(crate) fn download(&self, op: &'static str) -> Result<CpuStorage> {
        let mut host = CpuStorage::zeros(self.dtype, self.len);
        {
            let bytes: &mut [u8] = match &mut host {
                CpuStorage::U8(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::U32(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::I64(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::F16(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::BF16(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::F32(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                CpuStorage::F64(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
            };
            self.buf.read(0, bytes).map_err(gpu_err(op))?;
        }
        Ok(host)
    }

    /// The kernel argument for element `elem` of this buffer.
    pub(crate) fn arg(&self, elem: usize) -> KernelArg {
        KernelArg::Ptr(self.buf.device_ptr(elem * self.dtype.size_in_bytes()))
    }
}

/// The short dtype name used in kernel entry points (`unary_f32`): the dtype's own name.
pub(crate) fn dtype_suffix(dtype: DType) -> &'static str {
    dtype.as_str()
}

/// A module of kernels/tensor/ with no defines.
pub(crate) fn module(file: &str) -> ModuleSpec {
    ModuleSpec::new(format!("tensor/{file}"), [])
}

/// A grid-stride plan over `n` items.
pub(crate) fn grid_plan(module: ModuleSpec, entry: String, n: usize, args: Vec<KernelArg>) -> LaunchPlan {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchPlan::new(module, entry, attune_cuda::Dim3::x(blocks), attune_cuda::Dim3::x(THREADS), args)
}

/// Runs a plan on `dev`, naming `op` in errors.
pub(crate) fn launch(op: &'static str, dev: &GpuDevice, plan: &LaunchPlan) -> Result<()> {
    dev.launch(plan).map_err(gpu_err(op))
}

/// Every kernel module the tensor ops can launch, with their entry points and block sizes
/// (for `cargo xtask build-kernels`).
pub fn kernel_variants() -> Vec<(ModuleSpec, Vec<(String, u32)>)> {
    let mut out = Vec::new();
    let families = [
        ("elementwise.cu", elementwise::entries()),
        ("reduce.cu", reduce::entries()),
        ("softmax.cu", softmax::entries()),
        ("norm.cu", norm::entries()),
        ("index.cu", index::entries()),
        ("random.cu", random::entries()),
        ("loss.cu", loss::entries()),
    ];
    // Entries on the block-per-row schedule run at every size it picks, the rest at THREADS.
    let row_scheduled = |e: &str| {
        !e.starts_with("reduce_bwd_")
            && ["reduce_", "softmax_", "norm_fwd_", "norm_bwd_", "ce_fwd_"].iter().any(|p| e.starts_with(p))
    };
    for (file, entries) in families {
        let launches = entries
            .into_iter()
            .flat_map(|e| {
                let sizes: &[u32] = if row_scheduled(&e) { &softmax::ROW_BLOCKS } else { &[THREADS] };
                sizes.iter().map(move |&t| (e.clone(), t)).collect::<Vec<_>>()
            })
            .collect();
        out.push((module(file), launches));
    }
    out
}

/// The runtime device of a GPU tensor device (`Cuda` or `Emu`), for crates that launch their
/// own kernels (attune-attention). Errors on the CPU, or when the device is unavailable.
pub fn runtime_device(op: &'static str, device: Device) -> Result<GpuDevice> {
    gpu_device(op, device)
}

impl Tensor {
    /// The runtime device and the device address of this tensor's first element (its layout
    /// offset applied), for crates that launch their own kernels. The address stays valid while
    /// the tensor (or any view of its storage) is alive. Errors on CPU tensors.
    pub fn gpu_address(&self, op: &'static str) -> Result<(GpuDevice, u64)> {
        let elem = self.layout().offset();
        self.with_gpu(op, |g, _| Ok((g.gpu().clone(), g.buf.device_ptr(elem * g.dtype.size_in_bytes()))))
    }

    /// A contiguous tensor of `shape` on a GPU device whose elements are not initialised: the
    /// output buffer of a custom kernel that writes every element. No graph.
    pub fn uninit_on_gpu(
        op: &'static str,
        shape: impl Into<crate::Shape>,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let dev = gpu_device(op, device)?;
        let storage = GpuStorage::alloc(op, &dev, dtype, shape.elem_count())?;
        Ok(Tensor::from_storage(crate::storage::Storage::Gpu(storage), shape))
    }
}
