//! The typed error of attune-nn (docs/architecture.md, "Errors": what went wrong, the values, and the fix).

use std::path::PathBuf;

/// Errors of modules, losses and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor op failed underneath.
    #[error(transparent)]
    Tensor(#[from] attune_tensor::Error),
    /// The attention op rejected its inputs.
    #[error(transparent)]
    Attention(#[from] attune_attention::AttentionError),
    /// A module or model configuration that cannot be built.
    #[error("{module}: {msg}")]
    Config { module: &'static str, msg: String },
    /// An input whose shape or dtype does not fit the module.
    #[error("{module}: {msg}")]
    Input { module: &'static str, msg: String },
    /// Two parameters registered under the same name.
    #[error("parameter {name:?} is registered twice; give each module its own name with `ParamBuilder::sub`")]
    DuplicateParam { name: String },
    /// Reading or writing a checkpoint failed.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
}

/// Result alias of attune-nn.
pub type Result<T> = std::result::Result<T, NnError>;

impl NnError {
    pub(crate) fn config(module: &'static str, msg: impl Into<String>) -> NnError {
        NnError::Config { module, msg: msg.into() }
    }

    pub(crate) fn input(module: &'static str, msg: impl Into<String>) -> NnError {
        NnError::Input { module, msg: msg.into() }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> NnError {
        NnError::Checkpoint { path: path.into(), msg: msg.into() }
    }
}
