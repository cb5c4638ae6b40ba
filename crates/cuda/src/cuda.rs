//! The CUDA executor (cudarc driver API). Being written.

use crate::{Allocation, Backend, Error, Executor, LaunchPlan, Result};

/// Number of usable CUDA devices (0 when libcuda is absent or no GPU is present).
pub fn device_count() -> usize {
    0
}

/// Runs kernels on a GPU.
pub struct CudaExecutor;

impl CudaExecutor {
    /// Opens GPU `ordinal`.
    pub fn new(_ordinal: usize) -> Result<CudaExecutor> {
        Err(Error::NoGpu { why: "not built yet".into() })
    }
}

impl Executor for CudaExecutor {
    fn backend(&self) -> Backend {
        Backend::Cuda(0)
    }
    fn alloc(&self, _bytes: usize, _zeroed: bool) -> Result<Box<dyn Allocation>> {
        unimplemented!()
    }
    fn htod(&self, _src: &[u8], _dst: &dyn Allocation, _offset: usize) -> Result<()> {
        unimplemented!()
    }
    fn dtoh(&self, _src: &dyn Allocation, _offset: usize, _out: &mut [u8]) -> Result<()> {
        unimplemented!()
    }
    fn dtod(&self, _s: &dyn Allocation, _so: usize, _d: &dyn Allocation, _do: usize, _len: usize) -> Result<()> {
        unimplemented!()
    }
    fn launch(&self, _plan: &LaunchPlan) -> Result<()> {
        unimplemented!()
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "cuda".into()
    }
}
