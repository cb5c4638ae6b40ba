//! attune-cuda: Attune's GPU runtime (docs/architecture.md, docs/kernels.md).
//!
//! - [`LaunchPlan`]: a kernel file + defines, entry point, grid, block, shared memory and typed
//!   arguments, built by plain Rust.
//! - [`GpuDevice`] runs plans on a real GPU (NVRTC-compiled cubin/PTX launched through the CUDA
//!   driver, via cudarc with dynamic loading so nothing CUDA is needed to build) or on the
//!   emulator, which compiles the same .cu sources with the host C++ compiler against the
//!   headers in kernels/emu/ and runs each block's threads as cooperative fibers.
//! - Compiled modules are cached on disk ([`cache`]) keyed by the hash of the source, its
//!   includes, the defines, the target and the compiler version.

pub mod blas;
pub mod cache;
pub mod cuda;
mod device;
pub mod emu;
mod error;
pub mod nvrtc;
mod plan;
pub mod sources;
pub mod toolchain;

pub use device::{Allocation, Backend, Executor, GpuBuffer, GpuDevice};
pub use error::{Error, Result};
pub use plan::{Define, Dim3, KernelArg, LaunchPlan, ModuleSpec};

/// Whether a CUDA driver and at least one GPU are usable in this process.
pub fn cuda_is_available() -> bool {
    cuda::device_count() > 0
}
