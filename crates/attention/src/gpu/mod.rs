//! The CUDA attention kernels (kernels/attention/) on `Device::Cuda` and `Device::Emu`.
//!
//! Every kernel takes one [`abi::AttnParams`] by value. [`GpuCall`] fills it from the validated
//! [`Problem`] and the inputs' device addresses and strides, uploads the segment table, and
//! keeps it alive for the launches of one call. The kernel families:
//! - `fwd_simt.cu`: f32 (and any dtype on GPUs older than sm_80), SIMT, full f32 accuracy;
//! - `fwd_mma.cu`: f16/bf16 on sm_80+, FlashAttention-2 style with mma.sync, ldmatrix, cp.async;
//! - `fwd_split.cu`: split-KV for few query rows against long keys, plus the lse combine;
//! - `bwd.cu`: the backward (pre-pass, dK/dV kernel, dQ by atomics or deterministic).
//!
//! The public API is [`forward`] and [`backward`]. The kernel internals (launchers, tiles, the
//! parameter struct, [`GpuCall`], the dispatcher's choice, the variant lists) are public only
//! with the test-only `testing` feature (the kernel tests, xtask) and crate-private otherwise.

// Internals: public with the `testing` feature, crate-private (and partly unused) otherwise.
#[cfg(feature = "testing")]
pub mod abi;
#[cfg(not(feature = "testing"))]
mod abi;
#[cfg(feature = "testing")]
pub mod bwd;
#[cfg(not(feature = "testing"))]
mod bwd;
mod call;
mod dispatch;
#[cfg(feature = "testing")]
pub mod fwd_mma;
#[cfg(not(feature = "testing"))]
mod fwd_mma;
#[cfg(feature = "testing")]
pub mod fwd_simt;
#[cfg(not(feature = "testing"))]
mod fwd_simt;
#[cfg(feature = "testing")]
pub mod fwd_split;
#[cfg(not(feature = "testing"))]
mod fwd_split;
#[cfg(feature = "testing")]
mod variants;

pub(crate) use dispatch::forward_saving_f32;
pub use dispatch::{backward, forward};

#[cfg(feature = "testing")]
pub use call::{GpuCall, dtype_code, gpu_err, module, rows_aligned16, unit_last_stride};
#[cfg(feature = "testing")]
pub use dispatch::{FwdKernel, choose_forward, pick_forward};
#[cfg(feature = "testing")]
pub use variants::{ArchVariant, EntryLaunch, PlannedVariant, Variant, kernel_variants, planned_variants};

#[cfg(not(feature = "testing"))]
pub(crate) use call::{GpuCall, gpu_err, module, rows_aligned16, unit_last_stride};
