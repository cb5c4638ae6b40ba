//! attune-tensor: Attune's tensor library.
//!
//! - [`Tensor`]: a cheap-to-clone handle to shared storage plus a strided [`Layout`], so
//!   reshape (of contiguous data), transpose, permute, narrow, broadcast, squeeze and
//!   unsqueeze are views; `contiguous()` copies only when needed.
//! - [`DType`]: u8, u32, i64, f16, bf16, f32, f64 (f16/bf16 stored as such, computed in f32).
//! - [`Device`]: `Cpu`, `Cuda(ordinal)` (kernels compiled by NVRTC, cuBLAS matmul) and `Emu`
//!   (the CUDA emulator running the same kernels on the host); move tensors with `to_device`.
//! - Reverse-mode autograd: [`Var`] for parameters, [`Tensor::backward`] returning a
//!   [`GradStore`], [`no_grad`] scopes, and [`CustomOp`] for ops defined in other crates.
//! - Every error is an [`Error`] value naming the op, the values involved and the fix.

pub mod autograd;
pub mod cpu;
mod custom_op;
mod device;
mod display;
mod dtype;
mod error;
pub mod gpu;
pub mod grad_check;
mod layout;
pub mod ops;
mod shape;
pub mod storage;
mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use autograd::{GradFn, GradStore, NoGradGuard, Var, is_grad_enabled, no_grad, with_no_grad};
pub use custom_op::CustomOp;
pub use device::Device;
pub use dtype::{DType, FloatElem, WithDType, f64_to_bf16, f64_to_f16};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::creation::Rng;
pub use ops::loss::{CrossEntropyOpts, Reduction};
pub use ops::view::Infer;
pub use shape::{AllDims, Dim, Dims, Shape};
pub use tensor::{Tensor, TensorId};
