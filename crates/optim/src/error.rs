//! The typed error of attune-optim. Messages name the optimizer (or schedule), the parameter
//! and the values involved, and how to fix them (docs/architecture.md, "Errors").

/// Errors of optimizers, schedules, clipping and early stopping.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed (its message names the op and shapes).
    #[error(transparent)]
    Tensor(#[from] attune_tensor::Error),

    /// A hyper-parameter or argument outside its valid range.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// A saved state that does not fit this optimizer, its configuration or its parameters.
    #[error("{op}: cannot load state: {msg}")]
    StateMismatch { op: &'static str, msg: String },

    /// A gradient that does not fit its parameter.
    #[error("{op}: gradient of parameter '{param}' {msg}")]
    BadGradient { op: &'static str, param: String, msg: String },

    /// A state could not be converted to or from JSON.
    #[error("{op}: JSON state: {source}")]
    Json { op: &'static str, source: serde_json::Error },
}

/// Result alias of attune-optim.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }

    /// Shorthand for [`Error::StateMismatch`].
    pub(crate) fn state(op: &'static str, msg: impl Into<String>) -> Self {
        Error::StateMismatch { op, msg: msg.into() }
    }
}

/// Errors with `msg()` unless `ok`: the validation of one hyper-parameter.
pub(crate) fn ensure(op: &'static str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::invalid(op, msg())) }
}

/// Checks a learning rate (finite and >= 0), naming where it came from.
pub(crate) fn check_lr(op: &'static str, lr: f64) -> Result<()> {
    ensure(op, lr.is_finite() && lr >= 0.0, || {
        format!("learning rate must be finite and >= 0, got {lr}; pass a non-negative lr such as 1e-3")
    })
}

/// Checks a default weight decay (finite and >= 0).
pub(crate) fn check_weight_decay(op: &'static str, weight_decay: f64) -> Result<()> {
    ensure(op, weight_decay.is_finite() && weight_decay >= 0.0, || {
        format!("weight_decay must be finite and >= 0, got {weight_decay}")
    })
}
