//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use attune_cuda::{Dim3, GpuBuffer, GpuDevice, KernelArg, LaunchPlan, ModuleSpec};

/// The process's emulator device.
pub fn dev() -> GpuDevice {
    GpuDevice::emu().expect("the emulator needs a host C++ compiler")
}

/// The devices a test runs on: the emulator, then the first GPU when one is present (a line
/// says when it is not), so one test checks the emulated twin and the real instruction.
pub fn devices() -> Vec<GpuDevice> {
    let mut all = vec![dev()];
    match GpuDevice::cuda(0) {
        Ok(gpu) => all.push(gpu),
        Err(why) => eprintln!("skipped Cuda(0): {why}"),
    }
    all
}

/// A module of kernels/test/ with no defines.
pub fn test_module(file: &str) -> ModuleSpec {
    ModuleSpec::new(file, Vec::<(String, String)>::new())
}

/// A buffer holding `data`.
pub fn upload<T: bytemuck::Pod>(d: &GpuDevice, data: &[T]) -> GpuBuffer {
    d.htod(bytemuck::cast_slice(data)).expect("upload")
}

/// A buffer of `n` elements of T, zeroed.
pub fn zeros<T: bytemuck::Pod>(d: &GpuDevice, n: usize) -> GpuBuffer {
    d.alloc_zeroed(n * std::mem::size_of::<T>()).expect("alloc")
}

/// The buffer's contents as T.
pub fn download<T: bytemuck::Pod>(b: &GpuBuffer) -> Vec<T> {
    let bytes = b.to_host().expect("download");
    let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes);
    out
}

/// A pointer argument to the start of `b`.
pub fn ptr(b: &GpuBuffer) -> KernelArg {
    KernelArg::Ptr(b.device_ptr(0))
}

/// A plan for `entry` of `module`.
pub fn plan(module: &ModuleSpec, entry: &str, grid: Dim3, block: Dim3, args: Vec<KernelArg>) -> LaunchPlan {
    LaunchPlan::new(module.clone(), entry, grid, block, args)
}

/// xorshift64*: a deterministic stream of test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}
