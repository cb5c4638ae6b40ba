//! The CUDA emulator (GUIDE.md §5). Being written: see the module docs once it lands.

use crate::{Allocation, Backend, Error, Executor, LaunchPlan, Result};

/// Runs kernels on the host.
pub struct EmuExecutor;

impl EmuExecutor {
    /// Creates the emulator.
    pub fn new() -> Result<EmuExecutor> {
        Err(Error::NoGpu { why: "the emulator is not built yet".into() })
    }
}

impl Executor for EmuExecutor {
    fn backend(&self) -> Backend {
        Backend::Emu
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
        "emulator".into()
    }
}
