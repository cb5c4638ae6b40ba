//! attune-attention: fused attention with the semantics of docs/attention.md.
//!
//! - [`AttentionParams`]: scale, causal, sliding window, softcap, GQA/MQA (from the head
//!   counts), key padding, packed variable-length sequences, dropout with a Philox stream.
//! - [`oracle`]: the naive f64 implementation every other one is checked against.
//! - [`flash`]: the CPU flash implementation (tiled, online softmax), forward and backward.
//! - [`attention`]: the differentiable Tensor-level op (autograd through `CustomOp`).
//! - [`supports`]: which devices, dtypes and head dims the fused op takes (ask before calling).
//! - [`cases`]: reference case files (docs/attention.md) and the checker shared by tests and xtask.

pub mod cases;
pub mod error;
pub mod flash;
pub mod gpu;
mod op;
pub mod oracle;
pub mod params;
pub mod support;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{AttentionError, Result};
pub use flash::{AttentionGrads, AttentionOutput};
pub use op::attention;
pub use params::{AttentionParams, Dropout, Problem, Segment, validate};
pub use support::{Unsupported, supports};
