//! The typed error of attune-attention (docs/architecture.md, "Errors": what, the values, and the fix).

/// Errors of the attention API.
#[derive(Debug, thiserror::Error)]
pub enum AttentionError {
    /// Inputs whose shapes, dtypes or devices do not fit together.
    #[error("attention: {0}")]
    Shape(String),
    /// A parameter value that is not allowed.
    #[error("attention: {0}")]
    Param(String),
    /// A device, dtype or head_dim the fused kernels do not take ([`crate::supports`]).
    #[error("attention: {0}")]
    Unsupported(#[from] crate::support::Unsupported),
    /// A tensor op failed underneath.
    #[error(transparent)]
    Tensor(#[from] attune_tensor::Error),
}

/// Result alias of attune-attention.
pub type Result<T> = std::result::Result<T, AttentionError>;

impl From<AttentionError> for attune_tensor::Error {
    fn from(e: AttentionError) -> Self {
        match e {
            AttentionError::Tensor(t) => t,
            other => attune_tensor::Error::Custom { op: "attention".into(), source: Box::new(other) },
        }
    }
}
