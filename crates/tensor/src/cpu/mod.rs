//! CPU kernels: strided traversal, reductions, gemm and the Philox generator.

pub mod amx;
pub mod bf16dot;
pub mod gemm;
pub mod math;
pub mod philox;
pub mod reduce;
pub mod strided;
