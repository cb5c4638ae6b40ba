//! The typed error of attune-tensor. Every message names the op, the values involved and,
//! where there is one, the fix (docs/architecture.md, "Errors").

use crate::{DType, Device, Shape};

/// Errors returned by tensor operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("{op}: shape mismatch, lhs {lhs:?} vs rhs {rhs:?}; {hint}")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape, hint: String },

    /// Shapes cannot be broadcast together under NumPy rules.
    #[error(
        "{op}: shapes {lhs:?} and {rhs:?} are not broadcastable; trailing dims must be equal or 1 (reshape or unsqueeze one side)"
    )]
    NotBroadcastable { op: &'static str, lhs: Shape, rhs: Shape },

    /// Operands have different dtypes.
    #[error("{op}: dtype mismatch, lhs is {lhs} and rhs is {rhs}; convert one side with to_dtype")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    /// The op does not support this dtype.
    #[error("{op}: dtype {dtype} is not supported; {hint}")]
    UnsupportedDType { op: &'static str, dtype: DType, hint: &'static str },

    /// Operands live on different devices.
    #[error("{op}: device mismatch, lhs is on {lhs} and rhs is on {rhs}; move one with to_device")]
    DeviceMismatch { op: &'static str, lhs: Device, rhs: Device },

    /// The GPU runtime (attune-cuda) failed: compilation, launch or memory.
    #[error("{op}: {source}")]
    Gpu { op: &'static str, source: Box<attune_cuda::Error> },

    /// The device cannot run ops on this machine (no GPU with that ordinal, or no C++ compiler for Emu).
    #[error("{op}: device {device} is not available: {why}")]
    DeviceNotAvailable { op: &'static str, device: Device, why: String },

    /// A dimension index outside `-rank..rank`.
    #[error(
        "{op}: dim {dim} is out of range for a tensor of rank {rank} with shape {shape:?}; valid dims are -{rank}..{rank}"
    )]
    DimOutOfRange { op: &'static str, dim: isize, rank: usize, shape: Shape },

    /// The same dim was given twice.
    #[error("{op}: dim {dim} appears more than once in {dims:?}")]
    DuplicateDim { op: &'static str, dim: usize, dims: Vec<usize> },

    /// An index value outside the size of the indexed dim.
    #[error("{op}: index {index} is out of range for dim {dim} of size {size}; indices must be in 0..{size}")]
    IndexOutOfRange { op: &'static str, index: i64, dim: usize, size: usize },

    /// The number of elements does not match the requested shape.
    #[error("{op}: {got} elements cannot have shape {shape:?} ({expected} elements)")]
    ElementCount { op: &'static str, got: usize, expected: usize, shape: Shape },

    /// A view was requested that needs contiguous memory; call `contiguous()` first.
    #[error("{op}: tensor with shape {shape:?} and strides {strides:?} is not contiguous; call .contiguous() first")]
    NotContiguous { op: &'static str, shape: Shape, strides: Vec<usize> },

    /// A gradient was needed through an op that has no backward.
    #[error("backward: op {op} has no backward; detach its output or use a differentiable alternative")]
    NoBackward { op: String },

    /// The graph behind this tensor was already consumed by an earlier `backward()`.
    #[error(
        "backward: the graph of op {op} was released by an earlier backward(); use backward_retain_graph() to run backward twice"
    )]
    GraphReleased { op: String },

    /// backward() called on a tensor that does not need gradients.
    #[error(
        "backward: the tensor does not depend on any variable (shape {shape:?}); create parameters with Var::from_tensor or Tensor::to_var"
    )]
    NoGradient { shape: Shape },

    /// A value that is not allowed for an argument.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// An error raised by a custom op defined in another crate.
    #[error("{op}: {source}")]
    Custom { op: String, source: Box<dyn std::error::Error + Send + Sync> },
}

/// Result alias used throughout attune-tensor.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
}
