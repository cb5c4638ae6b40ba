//! `GpuDevice`: one executor (the CUDA driver on a GPU, or the emulator) behind one handle, and
//! `GpuBuffer`, device memory owned by it. The tensor crate sees only these two types and
//! [`crate::LaunchPlan`].

use crate::{Error, LaunchPlan, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// Which executor runs the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A real GPU through the CUDA driver (cudarc), by ordinal.
    Cuda(usize),
    /// The CUDA emulator: the same .cu sources compiled for the host.
    Emu,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cuda(i) => write!(f, "cuda:{i}"),
            Backend::Emu => f.write_str("emu"),
        }
    }
}

/// Device memory of one allocation. Implemented by each executor.
pub trait Allocation: Send + Sync + fmt::Debug {
    /// The address kernels use (a `CUdeviceptr`, or a host address on the emulator).
    fn device_ptr(&self) -> u64;
    /// The host address when device memory is host memory (the emulator), else `None`.
    fn host_ptr(&self) -> Option<*mut u8>;
}

/// What an executor does. `launch` takes a plan and runs it; memory calls move bytes.
pub trait Executor: Send + Sync {
    /// The backend this executor drives.
    fn backend(&self) -> Backend;
    /// Allocates `bytes` of device memory, zero-filled when `zeroed`.
    fn alloc(&self, bytes: usize, zeroed: bool) -> Result<Box<dyn Allocation>>;
    /// Copies host bytes into `dst` at `offset`.
    fn htod(&self, src: &[u8], dst: &dyn Allocation, offset: usize) -> Result<()>;
    /// Copies `out.len()` bytes from `src` at `offset` to the host.
    fn dtoh(&self, src: &dyn Allocation, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Copies `len` bytes between two allocations of this device.
    fn dtod(
        &self,
        src: &dyn Allocation,
        src_offset: usize,
        dst: &dyn Allocation,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;
    /// Runs one kernel (compiling and caching its module on first use).
    fn launch(&self, plan: &LaunchPlan) -> Result<()>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;
    /// A short description ("NVIDIA H100 (sm_90)", "emulator, 2 threads").
    fn describe(&self) -> String;
    /// The CUDA executor behind this trait object, for what only a real GPU has (cuBLAS needs
    /// its context and stream). `None` for every other executor.
    fn as_cuda(&self) -> Option<&crate::cuda::CudaExecutor> {
        None
    }
}

/// A handle to a GPU or the emulator. Cheap to clone.
#[derive(Clone)]
pub struct GpuDevice {
    backend: Backend,
    exec: Arc<dyn Executor>,
}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuDevice({})", self.backend)
    }
}

fn registry() -> &'static Mutex<HashMap<Backend, GpuDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<Backend, GpuDevice>>> = OnceLock::new();
    DEVICES.get_or_init(Default::default)
}

impl GpuDevice {
    /// The process-wide device for `backend`, created on first use.
    pub fn get(backend: Backend) -> Result<GpuDevice> {
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&backend) {
            return Ok(d.clone());
        }
        let exec: Arc<dyn Executor> = match backend {
            Backend::Emu => Arc::new(crate::emu::EmuExecutor::new()?),
            Backend::Cuda(ordinal) => Arc::new(crate::cuda::CudaExecutor::new(ordinal)?),
        };
        let dev = GpuDevice { backend, exec };
        map.insert(backend, dev.clone());
        Ok(dev)
    }

    /// The emulator device.
    pub fn emu() -> Result<GpuDevice> {
        GpuDevice::get(Backend::Emu)
    }

    /// The CUDA device `ordinal`; fails with [`Error::NoGpu`] when there is none.
    pub fn cuda(ordinal: usize) -> Result<GpuDevice> {
        GpuDevice::get(Backend::Cuda(ordinal))
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The CUDA executor when this is a [`Backend::Cuda`] device (for cuBLAS, which needs its
    /// context and stream).
    pub fn cuda_executor(&self) -> Option<&crate::cuda::CudaExecutor> {
        self.exec.as_cuda()
    }

    /// A description of the device.
    pub fn describe(&self) -> String {
        self.exec.describe()
    }

    /// Allocates `bytes` of uninitialised device memory.
    pub fn alloc(&self, bytes: usize) -> Result<GpuBuffer> {
        Ok(GpuBuffer { device: self.clone(), alloc: self.exec.alloc(bytes, false)?, len: bytes })
    }

    /// Allocates `bytes` of zeroed device memory.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<GpuBuffer> {
        Ok(GpuBuffer { device: self.clone(), alloc: self.exec.alloc(bytes, true)?, len: bytes })
    }

    /// Copies host bytes into a new buffer.
    pub fn htod(&self, bytes: &[u8]) -> Result<GpuBuffer> {
        let buf = self.alloc(bytes.len())?;
        self.exec.htod(bytes, &*buf.alloc, 0)?;
        Ok(buf)
    }

    /// Runs a kernel.
    pub fn launch(&self, plan: &LaunchPlan) -> Result<()> {
        self.exec.launch(plan)
    }

    /// Waits for queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.exec.synchronize()
    }
}

/// Device memory: freed when dropped.
#[derive(Debug)]
pub struct GpuBuffer {
    device: GpuDevice,
    alloc: Box<dyn Allocation>,
    len: usize,
}

impl GpuBuffer {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The owning device.
    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// The device address of byte `offset` (for [`crate::KernelArg::Ptr`]).
    pub fn device_ptr(&self, offset: usize) -> u64 {
        self.alloc.device_ptr() + offset as u64
    }

    /// The host address when the device is the emulator (device memory is host memory).
    pub fn host_ptr(&self) -> Option<*mut u8> {
        self.alloc.host_ptr()
    }

    fn check(&self, op: &'static str, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfRange { op, offset, end: offset.saturating_add(len), len: self.len }),
        }
    }

    /// Copies `out.len()` bytes starting at `offset` to the host.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check("GpuBuffer::read", offset, out.len())?;
        self.device.exec.dtoh(&*self.alloc, offset, out)
    }

    /// The whole buffer on the host.
    pub fn to_host(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len];
        self.read(0, &mut out)?;
        Ok(out)
    }

    /// Copies host bytes into the buffer at `offset`.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check("GpuBuffer::write", offset, src.len())?;
        self.device.exec.htod(src, &*self.alloc, offset)
    }

    /// Copies `len` bytes from `src` at `src_offset` into this buffer at `dst_offset`.
    pub fn copy_from(&self, dst_offset: usize, src: &GpuBuffer, src_offset: usize, len: usize) -> Result<()> {
        if src.device.backend != self.device.backend {
            return Err(Error::WrongDevice {
                op: "GpuBuffer::copy_from",
                got: src.device.backend.to_string(),
                expected: self.device.backend.to_string(),
            });
        }
        src.check("GpuBuffer::copy_from (source)", src_offset, len)?;
        self.check("GpuBuffer::copy_from (destination)", dst_offset, len)?;
        self.device.exec.dtod(&*src.alloc, src_offset, &*self.alloc, dst_offset, len)
    }
}
